// Package deploy holds the tests of pm's deployment files: the container
// image (../Dockerfile), the Kubernetes manifests (kubernetes/), the docker
// compose cluster (docker-compose.yml), the Grafana dashboard (grafana/) and
// the Prometheus alert rules (prometheus/). It is a module of its own so that
// the heavy Kubernetes, kustomize and compose dependencies stay out of pm's.
package deploy
