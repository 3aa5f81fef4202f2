"""`trgnet convert-pku` wires the data module's converter (format details are tested in tests/data)."""
import numpy as np

from trgnet_fast import cli


def test_convert_pku_command(tmp_path, capsys):
    skel, lab, out = tmp_path / "skeleton", tmp_path / "label", tmp_path / "out"
    skel.mkdir()
    lab.mkdir()
    rng = np.random.default_rng(0)
    for view in "LMR":
        np.savetxt(skel / f"0002-{view}.txt", rng.normal(size=(40, 150)).astype(np.float32))
        (lab / f"0002-{view}.txt").write_text("3,5,20,1\n7,25,35,1\n")
    assert cli.main(["convert-pku", "--skeletons", str(skel), "--labels", str(lab), "--out", str(out)]) == 0
    assert "converted 3 videos" in capsys.readouterr().out
    assert (out / "csv" / "PKU-view" / "train1.csv").is_file()
    assert np.load(out / "PKU" / "features" / "0002-L.npy").shape == (12, 25, 40)
