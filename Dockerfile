# headroom container image.
#   docker build -t ghcr.io/headroom-io/headroom:0.1.0 .
# Build stage: the locked dependency tree (Cargo.lock), release profile.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN cargo build --release --locked && strip target/release/headroom

# Runtime: distroless (glibc, CA certificates, no shell), non-root (uid 65532).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/headroom /usr/local/bin/headroom
USER 65532:65532
EXPOSE 8443 9090
ENTRYPOINT ["/usr/local/bin/headroom"]
CMD ["serve"]
