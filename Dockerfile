FROM condaforge/miniforge3:latest
LABEL io.github.snakemake.containerized="true"
LABEL io.github.snakemake.conda_env_hash="781f5b80df7d5dacdebdcf26ce716e58c43ff9f989716eb52c4d85e14e469b00"
# >>> sarssl
# Container image of the workflow's conda envs, for `snakemake --sdm conda apptainer`
# (or docker) on machines where building conda envs is slow or impossible.
# Everything outside the sarssl markers is the output of Snakemake itself,
#   snakemake --configfile config/test.yaml --replace-workflow-config --containerize
# (the /conda-envs/<hash> paths are the hashes Snakemake looks for). Regenerate after
# changing an env: python workflow/envs/make_dockerfile.py (tests/test_deploy.py checks).
# Build (needs docker; not built by the project's tests):
#   docker build -t sarssl:0.1.0 .
#   apptainer build sarssl.sif docker-daemon://sarssl:0.1.0     # for Apptainer
# The torch env gets conda-forge's CUDA 13.0 build (driver >= 580 on the GPU nodes).
ENV CONDA_OVERRIDE_CUDA=13.0
# <<< sarssl
# Conda environment:
#   source: workflow/envs/geo.yaml
#   prefix: /conda-envs/7bb97cd435949ff3ae7f581b23f2a7b0
#   # Geospatial stages: simulate, catalogue, preprocess, composite, chips, stats.
#   # conda-forge only, pinned to the versions the project is tested with (requirements.txt).
#   # The sarssl package itself is installed from this checkout by geo.post-deploy.sh.
#   channels:
#     - conda-forge
#     - nodefaults
#   dependencies:
#     - python=3.11
#     - pip
#     - setuptools
#     - wheel
#     - numpy=2.4.6
#     - scipy=1.17.1
#     - numba=0.68.1
#     - rasterio=1.4.4
#     - pyproj=3.7.2
#     - shapely=2.2.0
#     - pandas=3.1.1
#     - pyarrow=26.0.1
#     - lxml=6.1.3
#     - pyyaml=6.0.3
#     - jsonschema=4.26.0
#     - pystac=1.15.2
#     - tqdm=4.70.1
#     - matplotlib=3.11.2
RUN mkdir -p /conda-envs/7bb97cd435949ff3ae7f581b23f2a7b0
COPY workflow/envs/geo.yaml /conda-envs/7bb97cd435949ff3ae7f581b23f2a7b0/environment.yaml
# Conda environment:
#   source: workflow/envs/plot.yaml
#   prefix: /conda-envs/1befd4119d96f58e790bbcf34e5927a5
#   # Tables and figures: tables, plot.
#   # conda-forge only, pinned to the versions the project is tested with (requirements.txt).
#   # The sarssl package itself is installed from this checkout by plot.post-deploy.sh.
#   channels:
#     - conda-forge
#     - nodefaults
#   dependencies:
#     - python=3.11
#     - pip
#     - setuptools
#     - wheel
#     - numpy=2.4.6
#     - pandas=3.1.1
#     - pyarrow=26.0.1
#     - matplotlib=3.11.2
#     - pyyaml=6.0.3
#     - tqdm=4.70.1
#     - rasterio=1.4.4
#     - pyproj=3.7.2
#     - numba=0.68.1
#     - scipy=1.17.1
#     - shapely=2.2.0
RUN mkdir -p /conda-envs/1befd4119d96f58e790bbcf34e5927a5
COPY workflow/envs/plot.yaml /conda-envs/1befd4119d96f58e790bbcf34e5927a5/environment.yaml
# Conda environment:
#   source: workflow/envs/torch.yaml
#   prefix: /conda-envs/51dd4d779515615922d87b4e2f1ef38e
#   # Training stages: pretrain (MAE/DINO) and finetune.
#   # conda-forge only, pinned to the versions the project is tested with (requirements.txt).
#   # CUDA: the same CUDA 13.0 build of torch as the pip lock (requirements.txt: torch
#   # 2.14.1+cu130 with nvidia-*-cu13 13.0 wheels), pinned by cuda-version below; it needs an
#   # NVIDIA driver >= 580 (CUDA 13.0: 580.65.06 or newer; `nvidia-smi` shows the driver).
#   # conda-forge's CUDA builds need the __cuda virtual package; on a login node without a
#   # GPU create the env with CONDA_OVERRIDE_CUDA=13.0 set, otherwise the solver silently
#   # picks a CPU build (see README, "Run on your cluster").
#   # tensorboard: pretraining and fine-tuning write TensorBoard events when it is installed.
#   # The sarssl package itself is installed from this checkout by torch.post-deploy.sh.
#   channels:
#     - conda-forge
#     - nodefaults
#   dependencies:
#     - python=3.11
#     - pip
#     - setuptools
#     - wheel
#     - pytorch=2.14.1
#     - cuda-version=13.0
#     - torchvision=0.29.2
#     - timm=1.0.31
#     - torchmetrics=1.9.0
#     - safetensors=0.8.0
#     - huggingface_hub=2.4.0
#     - tensorboard=2.21.0
#     - numpy=2.4.6
#     - scipy=1.17.1
#     - pandas=3.1.1
#     - pyarrow=26.0.1
#     - rasterio=1.4.4
#     - pyproj=3.7.2
#     - shapely=2.2.0
#     - matplotlib=3.11.2
#     - pyyaml=6.0.3
#     - tqdm=4.70.1
#     - numba=0.68.1
#     - lxml=6.1.3
RUN mkdir -p /conda-envs/51dd4d779515615922d87b4e2f1ef38e
COPY workflow/envs/torch.yaml /conda-envs/51dd4d779515615922d87b4e2f1ef38e/environment.yaml

RUN conda env create --prefix /conda-envs/7bb97cd435949ff3ae7f581b23f2a7b0 --file /conda-envs/7bb97cd435949ff3ae7f581b23f2a7b0/environment.yaml && \
    conda env create --prefix /conda-envs/1befd4119d96f58e790bbcf34e5927a5 --file /conda-envs/1befd4119d96f58e790bbcf34e5927a5/environment.yaml && \
    conda env create --prefix /conda-envs/51dd4d779515615922d87b4e2f1ef38e --file /conda-envs/51dd4d779515615922d87b4e2f1ef38e/environment.yaml && \
    conda clean --all -y

# >>> sarssl
# The sarssl package itself into every env (what workflow/envs/*.post-deploy.sh do when
# Snakemake builds the envs; Snakemake's containerize does not run those scripts).
COPY pyproject.toml README.md LICENSE /opt/sarssl/
COPY src /opt/sarssl/src
RUN for env in /conda-envs/*/; do \
      conda run --prefix "$env" python -m pip install --no-deps --no-build-isolation \
        --no-cache-dir /opt/sarssl || exit 1; \
    done
# <<< sarssl
