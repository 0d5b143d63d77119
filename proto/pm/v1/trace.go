package pmv1

// TraceCarrier carries W3C trace context in a message's traceparent and
// tracestate fields. It has the methods of OpenTelemetry's
// propagation.TextMapCarrier, so a propagator injects into and extracts
// from WebSocketMessage and BusEvent directly.
type TraceCarrier struct{ parent, state *string }

// TraceCarrier returns the carrier of the envelope's trace context.
func (m *WebSocketMessage) TraceCarrier() TraceCarrier {
	return TraceCarrier{&m.Traceparent, &m.Tracestate}
}

// TraceCarrier returns the carrier of the event's trace context.
func (e *BusEvent) TraceCarrier() TraceCarrier {
	return TraceCarrier{&e.Traceparent, &e.Tracestate}
}

// Get returns the value of traceparent or tracestate, else "".
func (c TraceCarrier) Get(key string) string {
	if p := c.field(key); p != nil {
		return *p
	}
	return ""
}

// Set sets traceparent or tracestate; other keys are ignored.
func (c TraceCarrier) Set(key, value string) {
	if p := c.field(key); p != nil {
		*p = value
	}
}

// Keys lists the keys the carrier holds.
func (TraceCarrier) Keys() []string { return []string{"traceparent", "tracestate"} }

func (c TraceCarrier) field(key string) *string {
	switch key {
	case "traceparent":
		return c.parent
	case "tracestate":
		return c.state
	}
	return nil
}
