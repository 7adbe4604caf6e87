#!/usr/bin/env bash
# Wheels of what the GPU machine's image lacks, for an offline Python 3.12 x86-64 image that already has torch,
# torchvision, pandas, seaborn, jinja2, tqdm, scikit-learn, nvidia-ml-py, requests, rich, typer and psutil:
# codecarbon and its remaining dependencies, pinned to the versions tested together here (pydantic and
# pydantic-core must match). Into DIR (default .whl, the folder gpu_session.sh installs from).
#
#   bash reports/scripts/gpu_wheels.sh [DIR]
set -euo pipefail
dir=${1:-.whl}
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$dir" \
    codecarbon==3.3.2 arrow==1.4.0 tzdata==2026.6 authlib==1.9.10 joserfc==1.8.0 cryptography==50.0.2 \
    cffi==2.1.1 pycparser==3.12 pycountry==26.2.16 pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 \
    typing-inspection==0.4.5 questionary==2.1.1 prompt-toolkit==3.0.53 wcwidth==0.9.4 rapidfuzz==3.14.6
du -sh "$dir"
