package reserve

import (
	"hash/fnv"
	"strconv"
)

// DefaultNamespace prefixes every key unless configured otherwise
// (INVITEGATE_REDIS_NAMESPACE). Its "v1" names the key schema this
// release lays keys out in. A release that changes what a key holds does
// not just bump it: that takes the two releases of "Zero-downtime
// procedures" in docs/ARCHITECTURE.md.
const DefaultNamespace = "igv1"

// keys builds every Redis key of the reservation layer. Each key of shard s
// starts with the hash tag {ns:s}, so all keys of one shard live in one
// Redis Cluster hash slot and one Lua call may touch them together.
type keys struct {
	tags []string // tags[s] = "{ns:s}"
}

func newKeys(namespace string, shards int) keys {
	k := keys{tags: make([]string, shards)}
	for s := range k.tags {
		k.tags[s] = "{" + namespace + ":" + strconv.Itoa(s) + "}"
	}
	return k
}

// sentinel marks a shard as seeded from MongoDB; its value is the shard count.
func (k keys) sentinel(s int) string { return k.tags[s] + ":seeded" }

// bucket is a code's token bucket on shard s.
func (k keys) bucket(s int, code string) string { return k.tags[s] + ":b:" + code }

// claim maps a canonical email to the code it holds; it lives on the email's shard.
func (k keys) claim(s int, canonical string) string { return k.tags[s] + ":e:" + canonical }

// persisted records, with INVITEGATE_ACK=mongo, that MongoDB holds the
// email's registration: the value is "<code>" or, after the group commit
// wrote a new reservation, "<code>|<stream entry ID>" (MarkPersisted).
// The "d" stays: replicas of an older release read and write the same key.
func (k keys) persisted(s int, canonical string) string { return k.tags[s] + ":d:" + canonical }

// history is the replication ID of the Redis history shard s was seeded
// or last recovered in (history.lua).
func (k keys) history(s int) string { return k.tags[s] + ":h" }

// stream is shard s's reservation stream.
func (k keys) stream(s int) string { return k.tags[s] + ":x" }

// holds is shard s's holds by deadline (reserve.lua, expire.lua).
func (k keys) holds(s int) string { return k.tags[s] + ":hx" }

// transfer marks a token transfer into shard s as applied (reserve.lua).
func (k keys) transfer(s int, id string) string { return k.tags[s] + ":t:" + id }

// givenBack marks a reservation whose token was returned.
func (k keys) givenBack(s int, id string) string { return k.tags[s] + ":g:" + id }

// seatHint is the next seat number of code that MongoDB's cap hands a
// writer to try first (SeatHints); it lives on shard 0.
func (k keys) seatHint(code string) string { return k.tags[0] + ":q:" + code }

// lock serializes seeding of one code across replicas; it lives on shard 0.
func (k keys) lock(code string) string { return k.tags[0] + ":lock:" + code }

// shardOf returns the shard of a canonical email: FNV-1a mod shards.
func shardOf(canonical string, shards int) int {
	if shards == 1 {
		return 0
	}
	h := fnv.New64a()
	_, _ = h.Write([]byte(canonical))
	return int(h.Sum64() % uint64(shards))
}

// split divides n tokens over shards: the first n%shards shards get one more.
func split(n, shards int) []int {
	if n < 0 {
		n = 0
	}
	out := make([]int, shards)
	for s := range out {
		out[s] = n / shards
		if s < n%shards {
			out[s]++
		}
	}
	return out
}

// ShardOf returns the shard of a canonical email.
func (r *Reserver) ShardOf(canonical string) int { return shardOf(canonical, r.shards) }
