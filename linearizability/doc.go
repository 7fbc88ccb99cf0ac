// Package linearizability holds a test, and only a test, that records
// concurrent histories of a key-value store built on the coordinator and
// checks them for linearizability with porcupine. It lives in a module of
// its own so that the library does not depend on porcupine. See README.md.
package linearizability
