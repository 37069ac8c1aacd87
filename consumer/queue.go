package consumer

// queue is a FIFO of held messages. The zero value is empty.
type queue struct {
	buf  []*inflight // ring buffer; len(buf) is a power of two or 0
	head int
	n    int
}

func (q *queue) len() int { return q.n }

// push adds t at the back.
func (q *queue) push(t *inflight) {
	q.grow()
	q.buf[(q.head+q.n)&(len(q.buf)-1)] = t
	q.n++
}

// pop removes and returns the front; the queue must not be empty.
func (q *queue) pop() *inflight {
	t := q.buf[q.head]
	q.buf[q.head] = nil
	q.head = (q.head + 1) & (len(q.buf) - 1)
	q.n--
	return t
}

// removeIf removes, in order, the messages for which drop is true and
// returns them.
func (q *queue) removeIf(drop func(*inflight) bool) []*inflight {
	var out []*inflight
	kept := 0
	for i := range q.n {
		t := q.buf[(q.head+i)&(len(q.buf)-1)]
		if drop(t) {
			out = append(out, t)
			continue
		}
		q.buf[(q.head+kept)&(len(q.buf)-1)] = t
		kept++
	}
	for i := kept; i < q.n; i++ {
		q.buf[(q.head+i)&(len(q.buf)-1)] = nil
	}
	q.n = kept
	return out
}

// any reports whether match is true for a message in the queue.
func (q *queue) any(match func(*inflight) bool) bool {
	for i := range q.n {
		if match(q.buf[(q.head+i)&(len(q.buf)-1)]) {
			return true
		}
	}
	return false
}

// grow makes room for one more.
func (q *queue) grow() {
	if q.n < len(q.buf) {
		return
	}
	size := max(16, 2*len(q.buf))
	buf := make([]*inflight, size)
	for i := range q.n {
		buf[i] = q.buf[(q.head+i)&(len(q.buf)-1)]
	}
	q.buf, q.head = buf, 0
}
