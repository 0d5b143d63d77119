# pm-node container image: a static binary (the board in web/dist embedded)
# on an empty base, run as an unprivileged numeric user.
#
#   make image            # docker build -t pm-node:dev .
#   docker run -p 8080:8080 -p 9090:9090 -e PM_DATABASE_URL=… pm-node:dev
#
# deploy/image_test.go builds the binary with this file's build command and
# runs it as this file's user; keep the build command on one RUN line.

FROM golang:1.26-bookworm AS build
WORKDIR /src
# Modules first, so that a source change does not download them again.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ENV CGO_ENABLED=0 GOOS=linux GOFLAGS=-trimpath
RUN go build -ldflags="-s -w" -o /out/pm-node ./cmd/pm-node

FROM scratch
# CA certificates for https (PM_JWT_JWKS_URL, TLS to Postgres or Redis).
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/pm-node /pm-node
# No passwd file on scratch: a numeric user, not root. The Kubernetes
# manifests run as this uid too (runAsUser).
USER 65532:65532
# Clients (/ws, the board at /) and admin (/metrics, /healthz, /readyz).
EXPOSE 8080 9090
ENTRYPOINT ["/pm-node"]
