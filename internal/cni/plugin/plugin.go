package plugin

import (
	"context"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/vxflow/vxflow/internal/cni/wire"
)

// About is what the plugin prints to stderr when run without CNI_COMMAND.
const About = "vxflow-cni: vxflow's CNI plugin; it forwards each request to the node's vxflow-agent (CNI spec 1.1)"

// Main runs the plugin: it reads CNI_COMMAND and the configuration, forwards the request and prints the result
// or, as the specification asks, the error as JSON on stdout; it returns the error so main exits non-zero.
func Main() *types.Error {
	e := skel.PluginMainFuncsWithError(skel.CNIFuncs{
		Add:    func(a *skel.CmdArgs) error { return run(wire.CommandAdd, a) },
		Del:    func(a *skel.CmdArgs) error { return run(wire.CommandDel, a) },
		Check:  func(a *skel.CmdArgs) error { return run(wire.CommandCheck, a) },
		GC:     func(a *skel.CmdArgs) error { return run(wire.CommandGC, a) },
		Status: func(a *skel.CmdArgs) error { return run(wire.CommandStatus, a) },
	}, version.All, About)
	if e != nil {
		_ = e.Print()
	}
	return e
}

// run forwards one command; only ADD prints a result.
func run(command string, a *skel.CmdArgs) error {
	conf, err := wire.ParseNetConf(a.StdinData)
	if err != nil {
		return types.NewError(types.ErrDecodingFailure, "failed to parse the vxflow network configuration", err.Error())
	}
	c := &Client{SocketPath: conf.Socket, Timeout: time.Duration(conf.TimeoutSeconds) * time.Second}
	raw, cerr := c.Do(context.Background(), &wire.Request{
		Command:     command,
		ContainerID: a.ContainerID,
		Netns:       a.Netns,
		IfName:      a.IfName,
		Args:        a.Args,
		Config:      a.StdinData,
	})
	if cerr != nil {
		return cerr
	}
	if command != wire.CommandAdd {
		return nil
	}
	result, err := types100.NewResult(raw)
	if err != nil {
		return types.NewError(types.ErrDecodingFailure, "failed to decode the vxflow agent's result", err.Error())
	}
	if err := types.PrintResult(result, conf.CNIVersion); err != nil {
		return types.NewError(types.ErrIncompatibleCNIVersion, "failed to print the result in the requested CNI version", err.Error())
	}
	return nil
}
