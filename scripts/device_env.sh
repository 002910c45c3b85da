# Source this at the top of a device-machine script (the GPU image has no spectrace install):
#   . scripts/device_env.sh
# 1. Installs the wheels of scripts/fetch_device_wheels.sh (carried as .whl) into /tmp/site.
# 2. Makes the checkout importable as `spectrace` without installing it: `spectrace` is a
#    namespace package over the top-level tracer/ and engines/ folders (pyproject.toml), so a
#    folder /tmp/src/spectrace with links to them is all an import needs.
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
mkdir -p /tmp/src/spectrace
ln -sfn "$PWD/tracer" /tmp/src/spectrace/tracer
ln -sfn "$PWD/engines" /tmp/src/spectrace/engines
export PYTHONPATH="/tmp/src:/tmp/site"
