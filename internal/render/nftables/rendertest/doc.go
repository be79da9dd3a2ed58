// Package rendertest holds the Service NAT test cases (objects in, golden `nft list` text out) shared by the
// renderer's golden test and the applier's kernel test, which must agree on the same files.
package rendertest
