package cli

import (
	"cmp"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vxflow/vxflow/api/v1alpha1"
	"github.com/vxflow/vxflow/internal/model"
)

// Severities of a status Problem.
const (
	SeverityError   = "error"
	SeverityWarning = "warning"
)

// DefaultStaleAfter is how old a HostSubnet's lastSync may be before status calls the agent silent: the
// agent rewrites it at least every minute (its --status-refresh) while it runs.
const DefaultStaleAfter = 3 * time.Minute

// StatusReport is the overlay's state as the API shows it, problems first.
type StatusReport struct {
	// Time is when the report was made; ages are relative to it.
	Time time.Time `json:"time"`
	// Healthy is true when no Problem is an error.
	Healthy bool `json:"healthy"`
	// Problems are every problem found, errors first.
	Problems []Problem `json:"problems"`
	// ClusterNetwork is the singleton, nil when it does not exist.
	ClusterNetwork *ClusterNetworkStatus `json:"clusterNetwork"`
	// HostSubnets are the nodes, those with problems first.
	HostSubnets []HostSubnetStatus `json:"hostSubnets"`
}

// Problem is one thing that needs a person's attention.
type Problem struct {
	Severity string `json:"severity"`
	Object   string `json:"object"`
	Message  string `json:"message"`
}

// ClusterNetworkStatus summarises the ClusterNetwork.
type ClusterNetworkStatus struct {
	ClusterNetworks  []v1alpha1.ClusterNetworkEntry `json:"clusterNetworks"`
	ServiceNetwork   string                         `json:"serviceNetwork"`
	Mode             string                         `json:"mode"`
	VXLANPort        int32                          `json:"vxlanPort"`
	MTU              string                         `json:"mtu"`
	SubnetsAllocated int64                          `json:"subnetsAllocated"`
	SubnetsTotal     int64                          `json:"subnetsTotal"`
	Conditions       []Condition                    `json:"conditions"`
}

// Condition is a condition with its age.
type Condition struct {
	Type    string `json:"type"`
	Status  string `json:"status"`
	Reason  string `json:"reason,omitempty"`
	Message string `json:"message,omitempty"`
	Since   string `json:"since,omitempty"`
}

// HostSubnetStatus summarises one HostSubnet and its agent's report.
type HostSubnetStatus struct {
	Name         string                          `json:"name"`
	HostIP       string                          `json:"hostIP"`
	Subnet       string                          `json:"subnet"`
	GatewayIP    string                          `json:"gatewayIP,omitempty"`
	HasNode      bool                            `json:"hasNode"`
	Allocated    *Condition                      `json:"allocated,omitempty"`
	Programmed   *Condition                      `json:"programmed,omitempty"`
	Agent        *v1alpha1.HostSubnetAgentStatus `json:"agent,omitempty"`
	LastSyncAge  string                          `json:"lastSyncAge,omitempty"`
	Generation   int64                           `json:"generation"`
	ProblemCount int                             `json:"problems"`
	worst        int
}

// BuildStatus computes the report from the objects; it is pure (now and staleAfter are inputs), so every
// rule is table-tested.
func BuildStatus(st *ClusterState, now time.Time, staleAfter time.Duration) *StatusReport {
	r := &StatusReport{Time: now, Problems: []Problem{}, HostSubnets: []HostSubnetStatus{}}
	add := func(sev, obj, format string, args ...any) {
		r.Problems = append(r.Problems, Problem{Severity: sev, Object: obj, Message: fmt.Sprintf(format, args...)})
	}
	if cn := st.ClusterNetwork; cn == nil {
		add(SeverityError, "ClusterNetwork default", "does not exist: the overlay is not configured (create it, see config/samples)")
	} else {
		r.ClusterNetwork = clusterNetworkStatus(cn, now)
		obj := "ClusterNetwork default"
		ready := findCondition(cn.Status.Conditions, v1alpha1.ConditionReady)
		switch {
		case ready == nil:
			add(SeverityError, obj, "no Ready condition: the controller has not processed it (is vxflow-controller running?)")
		case ready.Status != metav1.ConditionTrue:
			add(SeverityError, obj, "Ready=%s %s: %s", ready.Status, ready.Reason, ready.Message)
		}
		if d := findCondition(cn.Status.Conditions, v1alpha1.ConditionDegraded); d != nil && d.Status == metav1.ConditionTrue {
			add(SeverityError, obj, "Degraded %s: %s", d.Reason, d.Message)
		}
		if cn.Status.ObservedGeneration != 0 && cn.Status.ObservedGeneration < cn.Generation {
			add(SeverityWarning, obj, "the controller has seen generation %d, the spec is generation %d", cn.Status.ObservedGeneration, cn.Generation)
		}
		if t := cn.Status.SubnetsTotal; t > 0 && cn.Status.SubnetsAllocated >= t {
			add(SeverityWarning, obj, "all %d node subnets are allocated: a new node gets none (add a cluster network range)", t)
		}
	}

	nodes := make(map[string]bool, len(st.Nodes))
	for _, n := range st.Nodes {
		nodes[n.Name] = true
	}
	hasSubnet := make(map[string]bool, len(st.HostSubnets))
	mtus := map[int32][]string{}
	for i := range st.HostSubnets {
		hs := &st.HostSubnets[i]
		hasSubnet[hs.Name] = true
		row, problems := hostSubnetStatus(hs, nodes[hs.Name] || len(st.Nodes) == 0, now, staleAfter)
		row.HasNode = nodes[hs.Name]
		r.Problems = append(r.Problems, problems...)
		row.ProblemCount = len(problems)
		for _, p := range problems {
			row.worst = max(row.worst, severityRank(p.Severity))
		}
		r.HostSubnets = append(r.HostSubnets, row)
		if hs.Status.Agent != nil && hs.Status.Agent.MTU > 0 {
			mtus[hs.Status.Agent.MTU] = append(mtus[hs.Status.Agent.MTU], hs.Name)
		}
	}
	if len(mtus) > 1 {
		var parts []string
		for mtu, names := range mtus {
			parts = append(parts, fmt.Sprintf("%d on %s", mtu, strings.Join(names, ",")))
		}
		slices.Sort(parts)
		add(SeverityWarning, "HostSubnets", "nodes use different pod MTUs (%s): traffic between them is limited to the smallest", strings.Join(parts, "; "))
	}
	for _, n := range st.Nodes {
		if !hasSubnet[n.Name] {
			add(SeverityError, "Node "+n.Name, "has no HostSubnet: the controller has not allocated it a subnet, so its pods cannot start")
		}
	}

	slices.SortStableFunc(r.Problems, func(a, b Problem) int {
		return cmp.Or(-cmp.Compare(severityRank(a.Severity), severityRank(b.Severity)), cmp.Compare(a.Object, b.Object))
	})
	slices.SortStableFunc(r.HostSubnets, func(a, b HostSubnetStatus) int {
		return cmp.Or(-cmp.Compare(a.worst, b.worst), cmp.Compare(a.Name, b.Name))
	})
	r.Healthy = true
	for _, p := range r.Problems {
		if p.Severity == SeverityError {
			r.Healthy = false
		}
	}
	return r
}

func severityRank(s string) int {
	switch s {
	case SeverityError:
		return 2
	case SeverityWarning:
		return 1
	}
	return 0
}

func clusterNetworkStatus(cn *v1alpha1.ClusterNetwork, now time.Time) *ClusterNetworkStatus {
	s := &ClusterNetworkStatus{
		ClusterNetworks: cn.Spec.ClusterNetworks, ServiceNetwork: cn.Spec.ServiceNetwork,
		Mode: string(cn.Spec.Mode), VXLANPort: cn.Spec.VXLANPort,
		MTU:              fmt.Sprintf("auto (each node's underlay MTU - %d)", model.VXLANOverhead),
		SubnetsAllocated: cn.Status.SubnetsAllocated, SubnetsTotal: cn.Status.SubnetsTotal,
		Conditions: []Condition{},
	}
	if s.Mode == "" {
		s.Mode = string(v1alpha1.NetworkModeSubnet)
	}
	if s.VXLANPort == 0 {
		s.VXLANPort = model.DefaultVXLANPort
	}
	if cn.Spec.MTU != nil {
		s.MTU = fmt.Sprint(*cn.Spec.MTU)
	}
	for _, c := range cn.Status.Conditions {
		s.Conditions = append(s.Conditions, toCondition(&c, now))
	}
	return s
}

// hostSubnetStatus summarises one HostSubnet and lists its problems.
func hostSubnetStatus(hs *v1alpha1.HostSubnet, hasNode bool, now time.Time, staleAfter time.Duration) (HostSubnetStatus, []Problem) {
	row := HostSubnetStatus{Name: hs.Name, HostIP: hs.Spec.HostIP, Subnet: hs.Spec.Subnet, GatewayIP: hs.Status.GatewayIP,
		Agent: hs.Status.Agent, Generation: hs.Generation}
	obj := "HostSubnet " + hs.Name
	var problems []Problem
	add := func(sev, format string, args ...any) {
		problems = append(problems, Problem{Severity: sev, Object: obj, Message: fmt.Sprintf(format, args...)})
	}
	if c := findCondition(hs.Status.Conditions, v1alpha1.ConditionAllocated); c != nil {
		cc := toCondition(c, now)
		row.Allocated = &cc
		if c.Status != metav1.ConditionTrue {
			add(SeverityError, "Allocated=%s %s: %s", c.Status, c.Reason, c.Message)
		}
	} else {
		add(SeverityWarning, "not accepted by the controller yet (no Allocated condition)")
	}
	c := findCondition(hs.Status.Conditions, v1alpha1.ConditionProgrammed)
	switch {
	case c == nil && hasNode:
		add(SeverityError, "no agent has reported (no Programmed condition): is vxflow-agent running on %s?", hs.Name)
	case c == nil:
		// A HostSubnet without a Node (an external VTEP) has no agent; nothing is expected.
	case c.Status == metav1.ConditionFalse:
		add(SeverityError, "Programmed=False %s: %s", c.Reason, c.Message)
	case c.Status != metav1.ConditionTrue:
		add(SeverityWarning, "Programmed=%s %s: %s", c.Status, c.Reason, c.Message)
	case c.ObservedGeneration != 0 && c.ObservedGeneration < hs.Generation:
		add(SeverityWarning, "programmed generation %d, the spec is generation %d: the agent has not caught up", c.ObservedGeneration, hs.Generation)
	}
	if c != nil {
		cc := toCondition(c, now)
		row.Programmed = &cc
		if c.Status == metav1.ConditionTrue && c.Reason != "" && c.Reason != v1alpha1.ConditionProgrammed && c.Message != "" {
			add(SeverityWarning, "%s: %s", c.Reason, c.Message) // e.g. PartiallyProgrammed: objects left out
		}
	}
	if a := hs.Status.Agent; a != nil && a.LastSync != nil {
		age := now.Sub(a.LastSync.Time)
		row.LastSyncAge = humanAge(age)
		if staleAfter > 0 && age > staleAfter {
			add(SeverityWarning, "last sync %s ago: the agent refreshes its status every minute while it runs; is it stuck or gone?", humanAge(age))
		}
	}
	return row, problems
}

func findCondition(conds []metav1.Condition, t string) *metav1.Condition {
	for i := range conds {
		if conds[i].Type == t {
			return &conds[i]
		}
	}
	return nil
}

func toCondition(c *metav1.Condition, now time.Time) Condition {
	out := Condition{Type: c.Type, Status: string(c.Status), Reason: c.Reason, Message: c.Message}
	if !c.LastTransitionTime.IsZero() {
		out.Since = humanAge(now.Sub(c.LastTransitionTime.Time))
	}
	return out
}

// humanAge prints a duration as kubectl's AGE column does: 45s, 12m, 3h, 5d.
func humanAge(d time.Duration) string {
	switch {
	case d < 0:
		return "0s"
	case d < 2*time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < 3*time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

// WriteStatus prints the report as text: the ClusterNetwork, the problems, then a table of HostSubnets.
func WriteStatus(w io.Writer, r *StatusReport) {
	if cn := r.ClusterNetwork; cn != nil {
		var conds []string
		for _, c := range cn.Conditions {
			s := c.Type + "=" + c.Status
			if c.Reason != "" {
				s += " (" + c.Reason + ")"
			}
			conds = append(conds, s)
		}
		fmt.Fprintf(w, "ClusterNetwork default: %s\n", orNone(strings.Join(conds, ", ")))
		var ranges []string
		for _, c := range cn.ClusterNetworks {
			ranges = append(ranges, fmt.Sprintf("%s (/%d per node)", c.CIDR, c.HostPrefix))
		}
		fmt.Fprintf(w, "  cluster networks: %s; service network %s\n", strings.Join(ranges, ", "), cn.ServiceNetwork)
		fmt.Fprintf(w, "  mode %s, VXLAN UDP %d, MTU %s\n", cn.Mode, cn.VXLANPort, cn.MTU)
		fmt.Fprintf(w, "  capacity: %d of %d node subnets allocated\n", cn.SubnetsAllocated, cn.SubnetsTotal)
	} else {
		fmt.Fprintln(w, "ClusterNetwork default: does not exist")
	}
	fmt.Fprintln(w)
	if len(r.Problems) == 0 {
		fmt.Fprintln(w, "No problems.")
	} else {
		fmt.Fprintf(w, "Problems (%d):\n", len(r.Problems))
		for _, p := range r.Problems {
			fmt.Fprintf(w, "  %-7s  %s: %s\n", strings.ToUpper(p.Severity), p.Object, p.Message)
		}
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "HOSTSUBNET\tHOST IP\tSUBNET\tALLOCATED\tPROGRAMMED\tSINCE\tFLOWS\tNFT\tMTU\tDATAPATH\tLAST SYNC\tSTATE HASH")
	for _, h := range r.HostSubnets {
		alloc, prog, since := "-", "-", "-"
		if h.Allocated != nil {
			alloc = h.Allocated.Status
		}
		if h.Programmed != nil {
			prog, since = h.Programmed.Status, orDash(h.Programmed.Since)
			if h.Programmed.Reason != "" && h.Programmed.Reason != v1alpha1.ConditionProgrammed {
				prog += " (" + h.Programmed.Reason + ")"
			}
		}
		flows, nft, mtu, dp, hash := "-", "-", "-", "-", "-"
		if a := h.Agent; a != nil {
			flows, nft, mtu = fmt.Sprint(a.Flows), fmt.Sprint(a.NFTRules), fmt.Sprint(a.MTU)
			dp, hash = orDash(a.DatapathType), orDash(a.StateHash)
		}
		last := "-"
		if h.LastSyncAge != "" {
			last = h.LastSyncAge + " ago"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", h.Name, h.HostIP, h.Subnet, alloc, prog, since,
			flows, nft, mtu, dp, last, hash)
	}
	_ = tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
