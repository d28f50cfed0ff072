package http

// ProblemTypes returns every problem document the API can answer, as its
// type URI and status, for the OpenAPI test: the spec must list exactly
// these.
func ProblemTypes() map[string]int {
	out := map[string]int{ProblemBase + internalFailure.slug: internalFailure.status}
	for _, row := range failures {
		out[ProblemBase+row.f.slug] = row.f.status
	}
	return out
}
