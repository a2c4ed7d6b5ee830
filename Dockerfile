# eventpipe service image (compose/docker-compose.yml builds it).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY eventpipe ./eventpipe
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 eventpipe
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER eventpipe
EXPOSE 8080
ENTRYPOINT []
CMD ["eventpipe", "run", "-c", "/etc/eventpipe/eventpipe.yaml"]
