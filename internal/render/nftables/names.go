package nftables

// Every table, chain, set and map name of the ruleset. The per-service names are a prefix followed by
// namespace/name/protocol/portname (and __address/port for endpoints); with Kubernetes' length limits
// (63-character namespace and name, 15-character port name) the longest, an affinity set, is 184 characters,
// inside nf_tables' 256, so unlike kube-proxy no hashing is needed and every name says what it is.
const (
	// TableName is vxflow's private table (family ip); nothing else is ever touched.
	TableName = "vxflow"

	rawPreroutingChain        = "raw-prerouting"
	rawOutputChain            = "raw-output"
	filterPreroutingChain     = "filter-prerouting"
	filterInputChain          = "filter-input"
	filterForwardChain        = "filter-forward"
	filterOutputChain         = "filter-output"
	filterOutputPostDNATChain = "filter-output-post-dnat"
	natPreroutingChain        = "nat-prerouting"
	natOutputChain            = "nat-output"
	natPostroutingChain       = "nat-postrouting"

	servicesChain               = "services"
	masqueradingChain           = "masquerading"
	markMasqChain               = "mark-for-masquerade"
	serviceEndpointsCheckChain  = "service-endpoints-check"
	nodePortEndpointsCheckChain = "nodeport-endpoints-check"
	firewallCheckChain          = "firewall-check"
	clusterIPsCheckChain        = "cluster-ips-check"
	rejectChain                 = "reject-chain"

	clusterCIDRsSet        = "cluster-cidrs"
	nodePortIPsSet         = "nodeport-ips"
	clusterIPsSet          = "cluster-ips"
	serviceIPsMap          = "service-ips"
	serviceNodePortsMap    = "service-nodeports"
	noEndpointServicesMap  = "no-endpoint-services"
	noEndpointNodePortsMap = "no-endpoint-nodeports"
	firewallIPsMap         = "firewall-ips"
	serviceEndpointsMap    = "service-endpoints"

	servicePolicyChainPrefix = "service-"
	localPolicyChainPrefix   = "local-"
	externalChainPrefix      = "external-"
	firewallChainPrefix      = "firewall-"
	endpointChainPrefix      = "endpoint-"
	affinitySetPrefix        = "affinity-"
)

// Standard nf_tables hook priorities (nft's names).
const (
	priorityRaw    = -300
	priorityDSTNAT = -100
	prioritySRCNAT = 100
)

// baseChains is the fixed topology: every base chain with its type, hook and priority. The filter chains
// run at dstnat-10 so that they see the pre-DNAT destination (a Service address), except
// filter-output-post-dnat, which must see the post-DNAT one, as in kube-proxy.
var baseChains = []struct {
	name     string
	typ      ChainType
	hook     Hook
	priority int
}{
	{rawPreroutingChain, ChainTypeFilter, HookPrerouting, priorityRaw},
	{rawOutputChain, ChainTypeFilter, HookOutput, priorityRaw},
	{filterPreroutingChain, ChainTypeFilter, HookPrerouting, priorityDSTNAT - 10},
	{filterInputChain, ChainTypeFilter, HookInput, priorityDSTNAT - 10},
	{filterForwardChain, ChainTypeFilter, HookForward, priorityDSTNAT - 10},
	{filterOutputChain, ChainTypeFilter, HookOutput, priorityDSTNAT - 10},
	{filterOutputPostDNATChain, ChainTypeFilter, HookOutput, priorityDSTNAT + 10},
	{natPreroutingChain, ChainTypeNAT, HookPrerouting, priorityDSTNAT},
	{natOutputChain, ChainTypeNAT, HookOutput, priorityDSTNAT},
	{natPostroutingChain, ChainTypeNAT, HookPostrouting, prioritySRCNAT},
}

// jumpChains are the jumps from base chains into the fixed regular chains, in rule order. Rejects happen
// only from input, forward and output because kernels before 5.9 refuse reject in prerouting.
var jumpChains = []struct {
	from, to   string
	onlyNewCts bool
}{
	{filterPreroutingChain, firewallCheckChain, true},
	{filterInputChain, nodePortEndpointsCheckChain, true},
	{filterInputChain, serviceEndpointsCheckChain, true},
	{filterForwardChain, serviceEndpointsCheckChain, true},
	{filterForwardChain, clusterIPsCheckChain, true},
	{filterOutputChain, serviceEndpointsCheckChain, true},
	{filterOutputChain, firewallCheckChain, true},
	{filterOutputPostDNATChain, clusterIPsCheckChain, true},
	{natPreroutingChain, servicesChain, false},
	{natOutputChain, servicesChain, false},
	{natPostroutingChain, masqueradingChain, false},
}
