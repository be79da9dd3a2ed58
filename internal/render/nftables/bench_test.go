package nftables

import (
	"testing"

	"github.com/vxflow/vxflow/internal/render/nftables/rendertest"
)

// BenchmarkRender renders 10,000 Services with 10 endpoints each (110,000 chains, 330,000 rules).
func BenchmarkRender10kx10(b *testing.B) {
	set := rendertest.ScaleSet(10000, 10)
	b.ReportAllocs()
	for b.Loop() {
		Render(set)
	}
}

// BenchmarkRender1kx100 renders 1,000 Services with 100 endpoints each.
func BenchmarkRender1kx100(b *testing.B) {
	set := rendertest.ScaleSet(1000, 100)
	b.ReportAllocs()
	for b.Loop() {
		Render(set)
	}
}
