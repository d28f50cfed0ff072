// Package defaults holds the rule every package's Config follows for a
// count or a duration: zero, or a negative, takes the default. (A setting
// whose negative means something, such as "off", checks == 0 itself.)
package defaults

// Positive sets *v to d unless *v is positive.
func Positive[T ~int | ~int64](v *T, d T) {
	if *v <= 0 {
		*v = d
	}
}
