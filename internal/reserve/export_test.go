package reserve

func (r *Reserver) BucketKey(s int, code string) string { return r.keys.bucket(s, code) }
