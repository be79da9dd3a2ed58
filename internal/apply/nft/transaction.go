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

// transaction queues operations on one google/nftables connection (sent by one Flush) and counts them.
type transaction struct {
	conn  *gnft.Conn
	table *gnft.Table
	// messages approximates the netlink messages queued: one per operation, plus one per extra batch of
	// elements the library splits off.
	messages                        int
	chainsWritten, chainsDeleted    int
	rules, elemsAdded, elemsDeleted int
	newStale                        map[string]time.Time
	deletedStale                    map[string]bool
	chainRefs                       map[string]*gnft.Chain
}

// elementsPerMessage is about how many map elements google/nftables packs into one message (it splits
// element lists at 64 KiB).
const elementsPerMessage = 1500

func newTransaction(conn *gnft.Conn, table *gnft.Table) *transaction {
	return &transaction{conn: conn, table: table, newStale: map[string]time.Time{}, deletedStale: map[string]bool{},
		chainRefs: map[string]*gnft.Chain{}}
}

// chain returns the google/nftables handle of a chain by name (regular chain fields only).
func (tx *transaction) chain(name string) *gnft.Chain {
	c, ok := tx.chainRefs[name]
	if !ok {
		c = &gnft.Chain{Table: tx.table, Name: name}
		tx.chainRefs[name] = c
	}
	return c
}

func (tx *transaction) addTable() {
	tx.conn.AddTable(tx.table)
	tx.messages++
}

func (tx *transaction) addChain(c *nftables.Chain) {
	gc := &gnft.Chain{Table: tx.table, Name: c.Name}
	if c.Base != nil {
		hook := hookNumbers[c.Base.Hook]
		prio := gnft.ChainPriority(c.Base.Priority)
		policy := gnft.ChainPolicyAccept
		gc.Hooknum, gc.Priority, gc.Policy = &hook, &prio, &policy
		gc.Type = gnft.ChainType(c.Base.Type)
	}
	tx.conn.AddChain(gc)
	tx.messages++
}

func (tx *transaction) flushChain(name string) {
	tx.conn.FlushChain(tx.chain(name))
	tx.messages++
}

func (tx *transaction) delChain(name string) {
	tx.conn.DelChain(tx.chain(name))
	tx.messages++
	tx.chainsDeleted++
}

// addRules appends all of a chain's rules.
func (tx *transaction) addRules(c *nftables.Chain) error {
	ref := tx.chain(c.Name)
	for _, r := range c.Rules {
		gr, err := compiledRule(tx.table, ref, r)
		if err != nil {
			return err
		}
		tx.conn.AddRule(gr)
		tx.messages++
		tx.rules++
	}
	return nil
}

func (tx *transaction) addSet(s *nftables.Set) {
	// AddSet's error is sticky in the connection and returned by Flush.
	_ = tx.conn.AddSet(compiledSet(tx.table, s), nil)
	tx.messages++
}

func (tx *transaction) delSet(s *gnft.Set) {
	s.Table = tx.table
	tx.conn.DelSet(s)
	tx.messages++
}

func (tx *transaction) flushSet(s *nftables.Set) {
	tx.conn.FlushSet(compiledSet(tx.table, s))
	tx.messages++
}

func (tx *transaction) addElements(s *nftables.Set, elems []nftables.Element) {
	if len(elems) == 0 {
		return
	}
	_ = tx.conn.SetAddElements(compiledSet(tx.table, s), setElements(s, elems))
	tx.messages += (len(elems) + elementsPerMessage - 1) / elementsPerMessage
	tx.elemsAdded += len(elems)
}

func (tx *transaction) delElements(s *nftables.Set, keys []nftables.ElementKey) {
	if len(keys) == 0 {
		return
	}
	_ = tx.conn.SetDeleteElements(compiledSet(tx.table, s), keyElements(s, keys))
	tx.messages += (len(keys) + elementsPerMessage - 1) / elementsPerMessage
	tx.elemsDeleted += len(keys)
}
