# syntax=docker/dockerfile:1
# Build: docker build -t bhiv --build-arg VERSION=$(git describe --always) .
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/bhiv ./cmd/bhiv \
 && mkdir -p /out/data

# Static binary on distroless, as the nonroot user (65532).
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/bhiv /bhiv
COPY --from=build --chown=65532:65532 /out/data /data
WORKDIR /data
USER 65532:65532
ENV BHIV_BUCKET_DIR=/data/bucket \
    BHIV_FAILED_LOG=/data/failed_core_sends.log
VOLUME ["/data"]
EXPOSE 8081 8082 9000
ENTRYPOINT ["/bhiv"]
CMD ["consume"]
