package consumer

import (
	"container/list"
	"hash/maphash"
	"slices"
	"sync"

	"github.com/hackaverse/bhiv"
)

// memory remembers, for the most recent event ids, which sinks have settled
// them (taken them, or had their failure durably logged), so that a
// redelivery in this process does not send an event to a sink again. It
// holds at most max ids and forgets the least recently touched first.
//
// Each id is remembered with the fingerprint of the message that carried it
// first: a different message under the same id (another event reusing the
// id) is not taken for a redelivery, so it is handed to the sinks, which
// keep the first and report the conflict.
type memory struct {
	mu  sync.Mutex
	max int
	ll  *list.List // of *memEntry, most recent at the front
	ids map[string]*list.Element
}

type memEntry struct {
	id   string
	fp   uint64 // fingerprint of the message
	mask uint64 // bit i: sink i settled
}

func newMemory(max int) *memory {
	return &memory{max: max, ll: list.New(), ids: make(map[string]*list.Element)}
}

// has reports whether sink number bit settled event id carried by the
// message with fingerprint fp.
func (m *memory) has(id string, fp uint64, bit int) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	el, ok := m.ids[id]
	if !ok {
		return false
	}
	m.ll.MoveToFront(el)
	e := el.Value.(*memEntry)
	return e.fp == fp && e.mask&(1<<bit) != 0
}

// conflict reports whether id is remembered with a fingerprint other than
// fp: another message used the id before.
func (m *memory) conflict(id string, fp uint64) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	el, ok := m.ids[id]
	return ok && el.Value.(*memEntry).fp != fp
}

// add records that sink number bit settled event id carried by the message
// with fingerprint fp. An id remembered with another fingerprint keeps it,
// and the first message's sinks: the first event under an id wins.
func (m *memory) add(id string, fp uint64, bit int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if el, ok := m.ids[id]; ok {
		if e := el.Value.(*memEntry); e.fp == fp {
			e.mask |= 1 << bit
		}
		m.ll.MoveToFront(el)
		return
	}
	m.ids[id] = m.ll.PushFront(&memEntry{id: id, fp: fp, mask: 1 << bit})
	for m.ll.Len() > m.max {
		last := m.ll.Back()
		m.ll.Remove(last)
		delete(m.ids, last.Value.(*memEntry).id)
	}
}

// len returns the number of ids remembered.
func (m *memory) len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.ll.Len()
}

// fpSeed makes fingerprints of one process comparable; memory is not kept
// across processes.
var fpSeed = maphash.MakeSeed()

// fingerprint hashes what makes a message the event it is: subject, data
// and headers. A redelivery, or the same event published again, has the
// same fingerprint.
func fingerprint(m bhiv.Message) uint64 {
	var h maphash.Hash
	h.SetSeed(fpSeed)
	h.WriteString(m.Subject)
	h.WriteByte(0)
	h.Write(m.Data)
	if len(m.Header) > 0 {
		keys := make([]string, 0, len(m.Header))
		for k := range m.Header {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			h.WriteByte(0)
			h.WriteString(k)
			for _, v := range m.Header[k] {
				h.WriteByte(1)
				h.WriteString(v)
			}
		}
	}
	return h.Sum64()
}
