# kcloud-opt-predictor, CPU image: `make image` (docker build -t kcloud-opt/predictor:cpu .).
# `docker run -p 8002:8002 kcloud-opt/predictor:cpu` runs the whole service as `make run` does, on a private
# Ray inside the container (deploy/image/start.sh). On KubeRay the same image runs the Ray head and workers
# (KubeRay replaces the command): deploy/overlays/cpu. GPU nodes: Dockerfile.gpu.
#
# The base is the official Ray image of the Ray version the project is tested with (pyproject's range,
# the manifests' rayVersion); its user `ray` (uid 1000, group users) owns /home/ray and its Python.
FROM rayproject/ray:2.60.0-py311-cpu

WORKDIR /home/ray/app

# torch from PyTorch's CPU index: PyPI's default Linux torch is the CUDA build, gigabytes of CUDA libraries
# a CPU image never uses. Installed first, so the project's `torch>=2.3,<3` keeps it.
RUN pip install --no-cache-dir torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu

# Editable install: the packages run from this folder, which also holds what they read at run time
# (configs/prices.yaml, serve_config.yaml, the demo data). .dockerignore lists what is copied.
COPY --chown=1000:100 . .
RUN pip install --no-cache-dir -e .

# Non-root, by number (uid of `ray`, group users): Kubernetes' runAsNonRoot can verify it.
USER 1000:100
EXPOSE 8002
# The demo models are trained on the first start (a few minutes) before Serve listens: a long start period.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15m --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8002/healthz', timeout=4)"]
CMD ["/home/ray/app/deploy/image/start.sh"]
