// Package e2e holds the end-to-end tests of a real pm cluster: pm-node
// processes sharing Postgres and Redis, behind HAProxy where installed.
//
// The tests build cmd/pm-node once (with -race when the tests themselves
// run with it), start a private redis-server and a fresh database per
// cluster, and drive the nodes through the Go SDK (package client) the way
// users' programs do: they assert what a user sees (replicas, answers,
// error codes, HTTP statuses) and compare it with the database. They need
// Postgres (127.0.0.1:5432), redis-server and haproxy on PATH (`make
// services`). Without haproxy they run against the nodes directly and skip
// the tests of HAProxy itself, except under CI (CI set), where a missing
// dependency fails the tests.
package e2e
