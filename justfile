# Helicopter Parent tasks. `just --list` shows them.
set shell := ["bash", "-euo", "pipefail", "-c"]

# Print the path of Python 3.14, provisioning a private copy when missing
python:
    @scripts/provision-python.sh
