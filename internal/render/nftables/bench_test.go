package nftables

import (
	"testing"

	"github.com/vxflow/vxflow/internal/render/nftables/rendertest"
)

// BenchmarkRender10kx10 renders 10,000 Services with 10 endpoints each (110,000 chains, 330,000 rules).
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

// BenchmarkRendererOneChange10kx10 re-renders 10,000 Services after one endpoint change with a Renderer
// that keeps the previous result (RenderGrouped), as the agent does.
func BenchmarkRendererOneChange10kx10(b *testing.B) { benchRendererOneChange(b, Options{}, false) }

// BenchmarkRendererOneChangeEndpointMap10kx10 is the same with Options.EndpointMap.
func BenchmarkRendererOneChangeEndpointMap10kx10(b *testing.B) {
	benchRendererOneChange(b, Options{EndpointMap: true}, false)
}

// BenchmarkRendererOneChangeKeys10kx10 is BenchmarkRendererOneChange10kx10 with the changed key passed
// (RenderGroupedChanged), as the agent does with model.ServiceBuilder's changes.
func BenchmarkRendererOneChangeKeys10kx10(b *testing.B) { benchRendererOneChange(b, Options{}, true) }

// BenchmarkRendererOneChangeKeysEndpointMap10kx10 is the same with Options.EndpointMap.
func BenchmarkRendererOneChangeKeysEndpointMap10kx10(b *testing.B) {
	benchRendererOneChange(b, Options{EndpointMap: true}, true)
}

func benchRendererOneChange(b *testing.B, opts Options, keys bool) {
	set := rendertest.ScaleSet(10000, 10)
	rr := NewRenderer(opts)
	rr.RenderGrouped(set)
	p := &set.Services[5000].Ports[0]
	orig := p.Endpoints[0]
	moved := orig
	moved.Port = 9999
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if i%2 == 0 {
			p.Endpoints[0] = moved
		} else {
			p.Endpoints[0] = orig
		}
		if keys {
			rr.RenderGroupedChanged(set, []string{set.Services[5000].Key()})
		} else {
			rr.RenderGrouped(set)
		}
	}
}
