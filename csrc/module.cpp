// Python module trgnet_fast._C. The ops register themselves with the dispatcher when the shared
// library is loaded (the library opened in library.cpp, each op's schemas in csrc/<op>.cpp); this
// module only makes the library importable and reports how it was built. Import torch before
// importing it.
#include <Python.h>

#ifdef TRGNET_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

#ifndef TORCH_EXTENSION_NAME
#define TORCH_EXTENSION_NAME _C
#endif

#define TRGNET_STR_(x) #x
#define TRGNET_STR(x) TRGNET_STR_(x)
#define TRGNET_CONCAT_(a, b) a##b
#define TRGNET_CONCAT(a, b) TRGNET_CONCAT_(a, b)

namespace {

PyObject* has_cuda(PyObject*, PyObject*) {
#ifdef TRGNET_WITH_CUDA
  Py_RETURN_TRUE;
#else
  Py_RETURN_FALSE;
#endif
}

// {"cuda": bool, "cuda_archs": str | None, "cuda_runtime": int | None, "torch": str | None}
PyObject* build_info(PyObject*, PyObject*) {
  PyObject* d = PyDict_New();
  if (d == nullptr) return nullptr;
  auto set = [d](const char* key, PyObject* value) {
    if (value == nullptr) return false;
    const int rc = PyDict_SetItemString(d, key, value);
    Py_DECREF(value);
    return rc == 0;
  };
  bool ok = true;
#ifdef TRGNET_WITH_CUDA
  ok = ok && set("cuda", Py_NewRef(Py_True));
#ifdef TRGNET_CUDA_ARCHS  // '_' separates archs: 8.0_9.0 -> "8.0;9.0"
  {
    PyObject* archs = PyUnicode_FromString(TRGNET_STR(TRGNET_CUDA_ARCHS));
    PyObject* fixed = archs ? PyObject_CallMethod(archs, "replace", "ss", "_", ";") : nullptr;
    Py_XDECREF(archs);
    ok = ok && set("cuda_archs", fixed);
  }
#else
  ok = ok && set("cuda_archs", Py_NewRef(Py_None));
#endif
  ok = ok && set("cuda_runtime", PyLong_FromLong(CUDART_VERSION));
#else
  ok = ok && set("cuda", Py_NewRef(Py_False));
  ok = ok && set("cuda_archs", Py_NewRef(Py_None));
  ok = ok && set("cuda_runtime", Py_NewRef(Py_None));
#endif
#ifdef TRGNET_TORCH_VERSION
  ok = ok && set("torch", PyUnicode_FromString(TRGNET_STR(TRGNET_TORCH_VERSION)));
#else
  ok = ok && set("torch", Py_NewRef(Py_None));
#endif
  if (!ok) {
    Py_DECREF(d);
    return nullptr;
  }
  return d;
}

PyMethodDef methods[] = {
    {"has_cuda", has_cuda, METH_NOARGS, "True when the module was built with the CUDA kernels."},
    {"build_info", build_info, METH_NOARGS, "How the module was built (cuda, cuda_archs, cuda_runtime, torch)."},
    {nullptr, nullptr, 0, nullptr}};

PyModuleDef module_def = {PyModuleDef_HEAD_INIT,
                          TRGNET_STR(TORCH_EXTENSION_NAME),
                          "trgnet_fast native ops (registered as torch.ops.trgnet.*).",
                          -1,
                          methods,
                          nullptr,
                          nullptr,
                          nullptr,
                          nullptr};

}  // namespace

PyMODINIT_FUNC TRGNET_CONCAT(PyInit_, TORCH_EXTENSION_NAME)(void) { return PyModule_Create(&module_def); }
