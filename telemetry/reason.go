package telemetry

// Reasons for proxy-made failures. The sidecar passes one in Outcome.Reason;
// it becomes the span's ferry.reason attribute and error status, the
// access log's reason and the reason label of ferry_requests_total. Any other
// non-empty string is reported as ReasonOther on metrics (to keep label
// cardinality bounded) and as given on spans and logs.
const (
	ReasonDialFailed     = "dial_failed"         // 502: no connection to the endpoint
	ReasonUpstreamReset  = "upstream_reset"      // 502: connection broke before response headers
	ReasonBadResponse    = "bad_response"        // 502: unparseable upstream response
	ReasonNoEndpoint     = "no_healthy_endpoint" // 503: discovery has no passing endpoint
	ReasonBreakerOpen    = "breaker_open"        // 503: every candidate's breaker is open
	ReasonTimeout        = "timeout"             // 504: upstream too slow
	ReasonBodyBroken     = "body_broken"         // response broke mid-body (status already sent)
	ReasonClientCanceled = "client_canceled"     // caller went away before the end
	ReasonGraceEnded     = "grace_ended"         // 503 (or cut mid-body): ferry ended it when the drain's grace period did
	ReasonNoRoute        = "no_route"            // 404: no route matched
	ReasonOther          = "other"

	// Refusals of a request head no handler saw (see Telemetry.Answered).
	ReasonHeaderTooLarge     = "header_too_large"    // 431: the head passed limits.max_header_bytes
	ReasonMalformedRequest   = "malformed_request"   // 400: a malformed request line or header (a bad Host among them); also when ferry's handler refuses one (a target not in origin form, an HTTP/2 method, query or authority an HTTP/1.1 request line cannot carry)
	ReasonUnsupportedRequest = "unsupported_request" // 501 for an unknown transfer coding, 417 for an unknown expectation
)

func boundedReason(r string) string {
	switch r {
	case "", ReasonDialFailed, ReasonUpstreamReset, ReasonBadResponse, ReasonNoEndpoint,
		ReasonBreakerOpen, ReasonTimeout, ReasonBodyBroken,
		ReasonClientCanceled, ReasonGraceEnded, ReasonNoRoute,
		ReasonHeaderTooLarge, ReasonMalformedRequest, ReasonUnsupportedRequest:
		return r
	default:
		return ReasonOther
	}
}

// statusClass maps a status code to the status_class label: "1xx".."5xx",
// or "none" when no status was sent. A status of 600 to 999 (net/http's
// client takes any three digits; ferry relays it as it came) is labelled
// "5xx": RFC 9110 section 15 calls it invalid and has a client process it
// as a 5xx.
func statusClass(code int) string {
	switch {
	case code >= 100 && code < 200:
		return "1xx"
	case code >= 200 && code < 300:
		return "2xx"
	case code >= 300 && code < 400:
		return "3xx"
	case code >= 400 && code < 500:
		return "4xx"
	case code >= 500 && code <= 999:
		return "5xx"
	default:
		return "none"
	}
}
