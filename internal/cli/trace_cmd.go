package cli

import "github.com/spf13/cobra"

func newTraceCommand(s Streams, g *globalOptions) *cobra.Command {
	return &cobra.Command{Use: "trace"}
}
