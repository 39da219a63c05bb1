# Sourced by run.sh and stacks.sh: the virtual environment with ONNX Runtime and PyTorch,
# installed from the Python registry on first use, in $venv.
venv=".venv"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --upgrade pip
  "$venv/bin/pip" install --quiet onnxruntime onnx numpy
  # PyTorch's PyPI wheel is the CUDA build (GBs of dependencies); without it only ORT runs.
  "$venv/bin/pip" install --quiet torch || echo "torch could not be installed: PyTorch columns stay empty"
fi
