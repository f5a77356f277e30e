package config

import (
	"reflect"
	"strings"
)

// knownKeys lists, for every table of the schema ("" for the top level),
// the names it takes: its keys and its sub-tables.
func knownKeys() map[string][]string {
	known := map[string][]string{}
	add := func(dotted string) {
		table, name := "", dotted
		if i := strings.LastIndexByte(dotted, '.'); i >= 0 {
			table, name = dotted[:i], dotted[i+1:]
		}
		known[table] = append(known[table], name)
	}
	walk("", reflect.ValueOf(Default()), func(table, _ string) { add(table) },
		func(table, key, _ string, _ reflect.Value) { add(join(table, key)) })
	return known
}

// didYouMean names the known key closest to an unknown dotted key, in the
// same table, when it is close enough to be a typo (at most two edits, and
// fewer than a third of the name); "" otherwise.
func didYouMean(key string, known map[string][]string) string {
	table, name := "", key
	if i := strings.LastIndexByte(key, '.'); i >= 0 {
		table, name = key[:i], key[i+1:]
	}
	best, bestD := "", 3
	for _, k := range known[table] {
		if d := editDistance(name, k); d < bestD && 3*d <= len(name) {
			best, bestD = k, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b (bytes).
func editDistance(a, b string) int {
	prev, cur := make([]int, len(b)+1), make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
