// Command vxflowctl renders a node's vxflow state offline, shows the live status of the overlay, and traces a
// packet hop by hop.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"k8s.io/klog/v2"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/vxflow/vxflow/internal/cli"
)

func main() {
	// controller-runtime's clients log through klog, so their warnings reach stderr.
	ctrllog.SetLogger(klog.Background())
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	cmd := cli.NewRootCommand(cli.Streams{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr})
	err := cmd.ExecuteContext(ctx)
	stop()
	if err != nil {
		var ee *cli.ExitError
		if !errors.As(err, &ee) || ee.Msg != "" {
			fmt.Fprintf(os.Stderr, "vxflowctl: %v\n", err)
		}
		os.Exit(cli.ExitCode(err))
	}
}
