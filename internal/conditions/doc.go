// Package conditions names the reasons vxflow writes into status conditions and holds small pure helpers to
// read and set them, so the controller, the agent and the CLI agree on the words.
package conditions
