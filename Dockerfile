# syntax=docker/dockerfile:1
# Multi-stage build: a static invitegate + invitectl on distroless, non-root.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /out/invitegate ./cmd/invitegate \
 && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /out/invitectl ./cmd/invitectl

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/invitegate /out/invitectl /usr/local/bin/
USER nonroot:nonroot
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/invitegate"]
CMD ["serve"]
