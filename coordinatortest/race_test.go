//go:build race

package coordinatortest_test

const raceEnabled = true
