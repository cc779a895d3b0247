package inject

import (
	"errors"
	"time"
)

// PreStopSleepPattern is every pre-stop sleep ferry takes, in the
// ferry.io/pre-stop-sleep annotation, in the --pre-stop-sleep flag of
// `ferry inject` and `ferry webhook`, and in the chart's
// inject.preStopSleep (values.schema.json holds this same expression, and
// a test keeps them equal): whole seconds from 0 to an hour, written as a
// number of seconds ("90", "90s", "3600s") or in h, m and s, largest first,
// with minutes and seconds below 60 after a larger unit ("1m30s", "60m",
// "1h", "1h0m0s", and with no hours "0h30m" or "0h"). Leading zeros are
// allowed. The expression is the whole
// rule, with the bound, so that a JSON schema can hold it: Go's duration
// syntax (fractions, ms, units repeated or in any order) cannot be bounded
// by one.
const PreStopSleepPattern = `^(?:0*(?:[0-9]{1,3}|[12][0-9]{3}|3[0-5][0-9]{2}|3600)s?|(?:0+h)?0*[1-5]?[0-9]m(?:0*[1-5]?[0-9]s)?|0+h(?:0*[1-5]?[0-9]s)?|0*60m(?:0+s)?|0*1h(?:0+m)?(?:0+s)?)$`

var preStopSleepRE = lazyRegexp(PreStopSleepPattern)

// errPreStopSleepForm says what PreStopSleepPattern takes.
var errPreStopSleepForm = errors.New("want whole seconds up to an hour: a number of seconds (90 or 90s), or h, m and s largest first with minutes and seconds below 60 after a larger unit (1m30s, 60m, 1h)")

// ParsePreStopSleep reads a pre-stop sleep as PreStopSleepPattern
// describes it. The value is taken as given: the annotation's reader trims
// it first, as it trims every annotation.
func ParsePreStopSleep(v string) (time.Duration, error) {
	if !preStopSleepRE().MatchString(v) {
		// Say what is wrong with a value that is a duration of another
		// form: negative, over an hour, not whole seconds.
		if _, err := parseDuration(v, true); err != nil && !errors.Is(err, errDurationForm) {
			return 0, err
		}
		return 0, errPreStopSleepForm
	}
	var total int64
	n := int64(0)
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c >= '0' && c <= '9' {
			// At most 3600 once leading zeros are read: no overflow.
			n = n*10 + int64(c-'0')
			continue
		}
		switch c {
		case 'h':
			total += n * 3600
		case 'm':
			total += n * 60
		case 's':
			total += n
		}
		n = 0
	}
	total += n // a number of seconds without a unit
	return time.Duration(total) * time.Second, nil
}

// errDurationForm is parseDuration's answer to a value that is no
// duration at all.
var errDurationForm = errors.New("want a duration such as 5s or a number of seconds")
