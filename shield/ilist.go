package shield

// links are the list pointers an element of an ilist carries.
type links[T any] struct{ prev, next *T }

// linked is a pointer to an element that carries its own links.
type linked[T any] interface {
	*T
	links() *links[T]
}

// ilist is an intrusive doubly linked list: O(1) append and removal of an
// element anywhere, with no allocation. An element is in one list of a kind
// at a time.
type ilist[T any, P linked[T]] struct{ head, tail *T }

func (l *ilist[T, P]) empty() bool { return l.head == nil }

func (l *ilist[T, P]) pushBack(x *T) {
	lx := P(x).links()
	lx.prev, lx.next = l.tail, nil
	if l.tail != nil {
		P(l.tail).links().next = x
	} else {
		l.head = x
	}
	l.tail = x
}

func (l *ilist[T, P]) unlink(x *T) {
	lx := P(x).links()
	if lx.prev != nil {
		P(lx.prev).links().next = lx.next
	} else {
		l.head = lx.next
	}
	if lx.next != nil {
		P(lx.next).links().prev = lx.prev
	} else {
		l.tail = lx.prev
	}
	lx.prev, lx.next = nil, nil
}

// next returns the element after x, nil at the end.
func next[T any, P linked[T]](x *T) *T { return P(x).links().next }
