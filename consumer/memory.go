package consumer

import (
	"container/list"
	"sync"
)

// memory remembers, for the most recent event ids, which sinks have settled
// them (taken them, or had their failure durably logged), so that a
// redelivery in this process does not send an event to a sink again. It
// holds at most max ids and forgets the least recently touched first.
type memory struct {
	mu  sync.Mutex
	max int
	ll  *list.List // of *memEntry, most recent at the front
	ids map[string]*list.Element
}

type memEntry struct {
	id   string
	mask uint64 // bit i: sink i settled
}

func newMemory(max int) *memory {
	return &memory{max: max, ll: list.New(), ids: make(map[string]*list.Element)}
}

// has reports whether sink number bit settled event id.
func (m *memory) has(id string, bit int) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	el, ok := m.ids[id]
	if !ok {
		return false
	}
	m.ll.MoveToFront(el)
	return el.Value.(*memEntry).mask&(1<<bit) != 0
}

// add records that sink number bit settled event id.
func (m *memory) add(id string, bit int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if el, ok := m.ids[id]; ok {
		el.Value.(*memEntry).mask |= 1 << bit
		m.ll.MoveToFront(el)
		return
	}
	m.ids[id] = m.ll.PushFront(&memEntry{id: id, mask: 1 << bit})
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
