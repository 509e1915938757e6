//! End-to-end tests against a real Kubernetes API server: kube-apiserver, etcd and
//! kube-controller-manager v1.36.3 (built by scripts/peers from the Go module proxy, started on
//! loopback by scripts/kube-cluster). There is no kubelet or scheduler: the controllers make
//! pods from Deployments and EndpointSlices from Services, and the tests patch pod status as a
//! kubelet would.

mod ca;
mod cluster;
mod install;
mod kubelet;
// The pods' network namespaces, shared with the mesh tests.
#[allow(dead_code)]
#[path = "../mesh/netns.rs"]
mod netns;
// Test certificates made with openssl, shared with the mesh tests.
#[allow(dead_code)]
#[path = "../mesh/pki.rs"]
mod pki;
mod pods;
// Free loopback ports, shared with the mesh and up tests.
#[path = "../mesh/ports.rs"]
mod ports;
mod registry;
mod webhook;
