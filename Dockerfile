# Runtime image of the distributed-llm `agent` (and the `tui` when its binary is in BIN_DIR:
# hack/images.sh puts it there only with WITH_TUI=1; the TUI normally runs on the host).
#
# Nothing is compiled here: the binaries are built on the host (`cargo build --release`)
# and copied from the build context, so no Rust toolchain image is needed. hack/images.sh
# passes BIN_DIR=target/image/<profile>: copies stripped of debug info (release builds
# keep it for profiling, which would triple the image). The model is never baked in:
# mount the host's model cache at /models (read-only).
#
#   docker build --build-arg BASE_IMAGE=distributed-llm/debian-base:bookworm \
#                --build-arg BIN_DIR=target/image/release -t distributed-llm/agent:latest .
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}

ARG BIN_DIR=target/release

LABEL org.opencontainers.image.title="distributed-llm agent" \
      org.opencontainers.image.description="Pipeline-parallel llama inference agent (gossip + gRPC) and TUI" \
      org.opencontainers.image.licenses="Apache-2.0"

RUN (getent group llm >/dev/null || groupadd --system --gid 10001 llm) \
 && (getent passwd llm >/dev/null || useradd --system --uid 10001 --gid llm --home-dir /home/llm --create-home --shell /usr/sbin/nologin llm) \
 && mkdir -p /models && chown llm:llm /models

# `tu[i]`: the tui is copied only when it is in BIN_DIR (hack/images.sh: WITH_TUI=1).
COPY ${BIN_DIR}/agent ${BIN_DIR}/tu[i] /usr/local/bin/

ENV BIND_PORT=8080 \
    GOSSIP_PORT=7946 \
    METRICS_PORT=9090 \
    MODEL_PATH=/models/SmolLM2-135M-Instruct.Q4_1.gguf \
    LOG_LEVEL=info

# 8080: gRPC + HTTP API, 7946: gossip (UDP), 9090: Prometheus metrics
EXPOSE 8080 7946/udp 7946/tcp 9090

USER llm
WORKDIR /home/llm

# The agent checks itself (no curl needed in a minimal base image).
HEALTHCHECK --interval=5s --timeout=3s --start-period=20s --retries=5 \
  CMD ["/usr/local/bin/agent", "healthcheck", "--url", "http://127.0.0.1:8080/health"]

ENTRYPOINT ["/usr/local/bin/agent"]
