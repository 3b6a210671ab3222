package trust

import "slices"

// Fits reports whether a node that advertises have can use a variant requiring need. A
// nil have is a node with every capability (a seed's full view, a data plane that did not
// narrow what it takes).
func Fits(need, have []string) bool {
	if have == nil {
		return true
	}
	for _, c := range need {
		if !slices.Contains(have, c) {
			return false
		}
	}
	return true
}

// Richest picks, among n variants, the one a node advertising have gets: the one with the
// most required capabilities among those that fit, ties going to the smallest key. It
// returns -1 when none fits. need(i) and key(i) describe variant i. Seeds answering a
// fetch, agents choosing what to serve and the southbound choosing per client all pick
// with it, so a node gets the same variant from each.
func Richest(n int, need func(i int) []string, key func(i int) string, have []string) int {
	best := -1
	for i := range n {
		req := need(i)
		if !Fits(req, have) {
			continue
		}
		if best < 0 || len(req) > len(need(best)) || (len(req) == len(need(best)) && key(i) < key(best)) {
			best = i
		}
	}
	return best
}
