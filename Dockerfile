# Warren: one image for warren-consumer, warren-producer, warrenctl and warren-console.
# Build: docker build -t warren .      Run: see docker-compose.yml.

# --- build -----------------------------------------------------------------------------------
FROM rust:1.92-bookworm AS build
# libjpeg-turbo 3.1 is built from source into warren-common (static, with its SIMD code).
RUN apt-get update && apt-get install -y --no-install-recommends cmake nasm && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Dependencies first, so source edits do not rebuild them.
COPY Cargo.toml Cargo.lock rustfmt.toml clippy.toml ./
COPY common common
COPY infra infra
COPY consumer consumer
COPY producer producer
COPY ops-cli ops-cli
COPY console console
# tests/, bench/ and examples/ are workspace members (cargo reads their manifests) but are not built: only
# the shipped binaries are selected, so features that only warren-bench turns on (warren-common's
# `pipelines`) stay out of them; a workspace-wide build would unify them in.
COPY tests tests
COPY bench bench
COPY examples examples
RUN cargo build --release --locked -p warren-consumer -p warren-producer -p warrenctl -p warren-console

# ONNX Runtime is loaded at run time; PyPI's wheel is where a registry serves the library.
FROM python:3.11-slim-bookworm AS onnxruntime
RUN pip download --no-deps --only-binary=:all: onnxruntime==1.31.1 -d /wheel \
 && python -c "import glob, zipfile; z = zipfile.ZipFile(glob.glob('/wheel/*.whl')[0]); \
open('/libonnxruntime.so.1.31.1', 'wb').write(z.read('onnxruntime/capi/libonnxruntime.so.1.31.1'))"

# --- run -------------------------------------------------------------------------------------
FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home /app warren \
 && mkdir /data && chown warren /data
WORKDIR /app
COPY --from=build /src/target/release/warren-consumer /src/target/release/warren-producer /src/target/release/warrenctl \
     /src/target/release/warren-console /usr/local/bin/
COPY --from=onnxruntime /libonnxruntime.so.1.31.1 /opt/onnxruntime/libonnxruntime.so.1.31.1
COPY config config
COPY models models
COPY samples/images samples/images
ENV ORT_DYLIB_PATH=/opt/onnxruntime/libonnxruntime.so.1.31.1 \
    WARREN_CONFIG_DIR=/app/config \
    WARREN_ENV=production \
    WARREN__TELEMETRY__METRICS_ADDR=0.0.0.0:9464
USER warren
# /data: warren-console's SQLite store, owned by warren so a named volume mounted there is too
# (Docker copies an empty volume's ownership from the image). The console serves on 8470.
EXPOSE 9464 8470
ENTRYPOINT ["warren-consumer"]
