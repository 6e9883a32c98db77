# artfs images. Stages:
#   build   - compiles the release binary;
#   test    - the build stage plus what the test suite needs (scripts/install-deps.sh);
#             runs the README's test command; docker-compose.test.yml uses it;
#   runtime - a slim image with the binary and fuse3 (the default target).
# Mounting needs /dev/fuse and CAP_SYS_ADMIN in the container, e.g.
#   docker run --device /dev/fuse --cap-add SYS_ADMIN --security-opt apparmor:unconfined ...

FROM rust:1.89-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin artfs

FROM build AS test
RUN bash scripts/install-deps.sh
# The README's test command (tests/containers.rs checks they agree).
CMD ["cargo", "test"]

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends fuse3 ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/artfs /usr/bin/artfs
COPY docs/artfs.example.toml /etc/artfs/artfs.example.toml
ENTRYPOINT ["/usr/bin/artfs"]
CMD ["--help"]
