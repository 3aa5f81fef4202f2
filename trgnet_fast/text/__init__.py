"""Text side of TRG-Net: descriptions → offline BERT-family encoder → embeddings → TJG (V×V) and TAG (K×K)
(docs/model.md#text-side), their cache, and plots of the priors and of a trained model's adaptive graphs.

Main entry point: :func:`text_priors`. Heavy imports (transformers, matplotlib) happen lazily.
"""
from trgnet_fast.text.descriptions import action_texts, joint_layout, joint_names, joint_texts
from trgnet_fast.text.graphs import distance_graph, graph_stats, pairwise_l2
from trgnet_fast.text.priors import TextPriors, embed_texts, text_priors, write_text_graphs

__all__ = ["TextPriors", "action_texts", "distance_graph", "embed_texts", "graph_stats", "joint_layout",
           "joint_names", "joint_texts", "pairwise_l2", "text_priors", "write_text_graphs"]
