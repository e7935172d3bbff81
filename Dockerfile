# ketamine-fhir: the service on gunicorn, installed as README's quick start does, with the
# dependencies pinned to requirements.lock (the set tests/test_dependency_lock.py audits).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    KETAMINE_FHIR_DATA=/data

RUN useradd --system --create-home --home-dir /app --uid 10001 ketamine \
    && mkdir /data && chown ketamine /data

WORKDIR /app
COPY --chown=ketamine pyproject.toml README.md requirements.lock ./
COPY --chown=ketamine service ./service
COPY --chown=ketamine mappings ./mappings
RUN pip install -r requirements.lock . && rm -rf build

USER ketamine
VOLUME ["/data"]
EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=4).status != 200)"

CMD ["ketamine-fhir", "serve", "--host", "0.0.0.0", "--port", "8000"]
