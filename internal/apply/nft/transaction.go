package nft

import (
	"time"

	gnft "github.com/google/nftables"

	"github.com/vxflow/vxflow/internal/render/nftables"
)

// hookNumbers maps the renderer's hooks to netfilter's numbers.
var hookNumbers = map[nftables.Hook]gnft.ChainHook{
	nftables.HookPrerouting:  *gnft.ChainHookPrerouting,
	nftables.HookInput:       *gnft.ChainHookInput,
	nftables.HookForward:     *gnft.ChainHookForward,
	nftables.HookOutput:      *gnft.ChainHookOutput,
	nftables.HookPostrouting: *gnft.ChainHookPostrouting,
}

// transaction is one batch being built, with counts for the Result and the stale-chain bookkeeping that
// takes effect only if the batch commits.
type transaction struct {
	b                               *batch
	setIDs                          uint32
	chainsWritten, chainsDeleted    int
	rules, elemsAdded, elemsDeleted int
	newStale                        map[string]time.Time
	deletedStale                    map[string]bool
}

func newTransaction(table string, genID uint32, sizeHint int) *transaction {
	return &transaction{b: newBatch(table, genID, sizeHint), newStale: map[string]time.Time{}, deletedStale: map[string]bool{}}
}

// messages is the number of nf_tables messages queued.
func (tx *transaction) messages() int { return tx.b.msgs }

func (tx *transaction) addTable()                  { tx.b.addTable() }
func (tx *transaction) addChain(c *nftables.Chain) { tx.b.addChain(c) }
func (tx *transaction) flushChain(name string)     { tx.b.flushChain(name) }
func (tx *transaction) flushSet(s *nftables.Set)   { tx.b.flushSet(s.Name) }
func (tx *transaction) delSet(name string)         { tx.b.delSet(name) }

func (tx *transaction) delChain(name string) {
	tx.b.delChain(name)
	tx.chainsDeleted++
}

// addRules appends all of a chain's rules.
func (tx *transaction) addRules(c *nftables.Chain) {
	for _, r := range c.Rules {
		tx.b.addRule(c.Name, r)
	}
	tx.rules += len(c.Rules)
}

func (tx *transaction) addSet(s *nftables.Set) {
	tx.setIDs++
	tx.b.addSet(s, tx.setIDs)
}

func (tx *transaction) addElements(s *nftables.Set, elems []nftables.Element) {
	tx.b.elements(s, elems, false)
	tx.elemsAdded += len(elems)
}

func (tx *transaction) delElements(s *nftables.Set, keys []nftables.ElementKey) {
	if len(keys) == 0 {
		return
	}
	elems := make([]nftables.Element, len(keys))
	for i, k := range keys {
		elems[i] = nftables.Element{Prefix: k.Prefix, Proto: k.Proto, Port: k.Port, Index: k.Index}
	}
	tx.b.elements(s, elems, true)
	tx.elemsDeleted += len(keys)
}
