package reserve

// ShardOf returns the shard of a canonical email, for the external tests.
func (r *Reserver) ShardOf(canonical string) int { return shardOf(canonical, r.shards) }

func (r *Reserver) BucketKey(s int, code string) string { return r.keys.bucket(s, code) }
