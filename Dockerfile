# One base image for every Python component of Isthmus: the Bookinfo apps today; pilot, citadel,
# mixer and the proxy use the same image with a different command.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

# Dependencies first (exact pins), so that a source change does not reinstall them.
COPY pyproject.toml constraints.txt README.md ./
RUN python -c "import tomllib; print('\\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
      > /tmp/requirements.txt
RUN pip install -c constraints.txt -r /tmp/requirements.txt

COPY api ./api
COPY isthmus ./isthmus
COPY proxy ./proxy
COPY pilot ./pilot
COPY citadel ./citadel
COPY mixer ./mixer
COPY sample-apps ./sample-apps
RUN pip install --no-deps . && python -c "import isthmus, proxy, pilot, citadel, mixer, bookinfo"

# Apps run as an ordinary user. UID 1337 is kept for the sidecar, as in Istio, because the
# iptables rules exclude the proxy's own UID from capture.
RUN useradd --uid 1000 --create-home app && useradd --uid 1337 --no-create-home istio-proxy
USER app
EXPOSE 9080
