//go:build !race

package coordinatortest_test

const raceEnabled = false
