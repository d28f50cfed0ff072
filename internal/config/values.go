package config

import (
	"errors"
	"strconv"
	"strings"
	"time"
)

// flag.Value implementations that parse strictly: a bad value is an error,
// never a zero.

type strVal string

func (v *strVal) Set(s string) error { *v = strVal(s); return nil }
func (v *strVal) String() string {
	if v == nil {
		return ""
	}
	return string(*v)
}

type listVal []string

func (v *listVal) Set(s string) error {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	*v = out
	return nil
}
func (v *listVal) String() string {
	if v == nil {
		return ""
	}
	return strings.Join(*v, ",")
}

type boolVal bool

func (v *boolVal) Set(s string) error {
	b, err := strconv.ParseBool(s)
	if err != nil {
		return errors.New("want true or false")
	}
	*v = boolVal(b)
	return nil
}
func (v *boolVal) String() string   { return strconv.FormatBool(v != nil && bool(*v)) }
func (v *boolVal) IsBoolFlag() bool { return true }

type intVal int

func (v *intVal) Set(s string) error {
	n, err := strconv.Atoi(s)
	if err != nil {
		return errors.New("want an integer")
	}
	*v = intVal(n)
	return nil
}
func (v *intVal) String() string {
	if v == nil {
		return "0"
	}
	return strconv.Itoa(int(*v))
}

type durVal time.Duration

func (v *durVal) Set(s string) error {
	d, err := time.ParseDuration(s)
	if err != nil {
		return errors.New("want a duration such as 500ms or 5s")
	}
	*v = durVal(d)
	return nil
}
func (v *durVal) String() string {
	if v == nil {
		return "0s"
	}
	return time.Duration(*v).String()
}

// autoValue is the default of a setting whose value depends on others;
// Load resolves it.
const autoValue = "auto"

// autoDuration is what an autoDurVal holds until Load resolves it.
const autoDuration = time.Duration(-1)

// maxReplicaAckTimeout bounds INVITEGATE_ACK_TIMEOUT with ack=replica.
const maxReplicaAckTimeout = 10 * time.Second

// autoDurVal is a durVal that may also be "auto" (autoDuration).
type autoDurVal time.Duration

func (v *autoDurVal) Set(s string) error {
	if s == autoValue {
		*v = autoDurVal(autoDuration)
		return nil
	}
	return (*durVal)(v).Set(s)
}
func (v *autoDurVal) String() string {
	if v != nil && time.Duration(*v) == autoDuration {
		return autoValue
	}
	return (*durVal)(v).String()
}
