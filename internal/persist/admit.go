package persist

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/invitegate/invitegate/internal/invite"
)

// MongoDB holds the cap too (I1 whatever Redis says): every registration
// the reconciler, the INVITEGATE_ACK=mongo committer or a reseed writes
// holds a seat of its code first, a document "<code>#<k>" of the seats
// collection with k below max_uses, unique by _id. Why that bounds a
// code's registrations by max_uses under any number of concurrent writers,
// the crash points and what each leaves: docs/ARCHITECTURE.md, "MongoDB
// holds the cap".

// admitRounds bounds the rounds of one Admit: a round reads the code's
// seats, takes the free ones it needs and checks max_uses again. A
// reservation still without a verified seat after them is Failed (retried
// by its caller), never Refused.
const admitRounds = 8

// seatDoc is one document of the seats collection. Email is empty only on
// seats an earlier release's SeatRegistrations wrote without one.
type seatDoc struct {
	ID    string    `bson:"_id"`
	Code  string    `bson:"code"`
	K     int       `bson:"k"`
	Email string    `bson:"email,omitempty"`
	At    time.Time `bson:"at,omitempty"`
}

// admitState is what a Store remembers between Admit calls.
type admitState struct {
	mu sync.Mutex
	// max is the last max_uses read per code. It only guides a round's
	// choice of seats: every round checks max_uses again after taking
	// them.
	max map[string]int
	// scanned holds, per code whose registrations were compared with its
	// seats in this process, how many registrations were left without a
	// seat because none was free (0 normally).
	scanned map[string]int
	// taking counts, per code and seat, the Admit calls of this process
	// whose current round picked it: the others pick other seats.
	taking map[string]map[int]int
	// released is closed (and replaced) whenever a call lets go of seats
	// it held.
	released chan struct{}
}

// Admit writes reservations as registrations like Persist, each after
// taking a seat of its code in the seats collection (or keeping the one
// its email already holds). A reservation for which no seat is left, or
// whose code MongoDB does not know, is Refused and not written: MongoDB
// never holds more than max_uses registrations of a code, whatever Redis
// admitted. The results are in the order of rs. A returned error means no
// registration was written (MongoDB unreachable; seats taken meanwhile are
// kept for the retry); per-item failures are Failed.
func (s *Store) Admit(ctx context.Context, rs []invite.Reservation) ([]Result, error) {
	a := s.newAdmission(rs, nil)
	return a.run(ctx)
}

// SeatRegistrations takes a seat for every registration of codes that
// holds none (registrations written by an earlier release, or by the
// Redis path before a deployment switched to INVITEGATE_RESERVER=mongo);
// seats already there are kept. Codes without an invitation are skipped.
// It returns how many registrations it could not seat because their code
// had no free seat left (already over max_uses).
func (s *Store) SeatRegistrations(ctx context.Context, codes []string) (unseated int, err error) {
	a := s.newAdmission(nil, codes)
	if _, err := a.run(ctx); err != nil {
		return 0, err
	}
	if len(a.scan) > 0 {
		return a.unseated, fmt.Errorf("%w: seating registrations did not finish", ErrDatabase)
	}
	return a.unseated, nil
}

// entry states in an admission.
const (
	stPending = iota // needs a verified seat
	stHeld           // holds a seat below max_uses, verified after it was taken
	stFull           // no seat was free: refused unless MongoDB has the email
	stDone           // out settled (Refused for an unknown code)
)

// admission is one Admit call.
type admission struct {
	s     *Store
	rs    []invite.Reservation
	out   []Result
	state []int
	// seen: the entry found no free seat in one round; a second such round
	// makes it stFull.
	seen []bool
	// scan holds the codes whose registrations are compared with their
	// seats in the next round (first use in this process, or more
	// registrations than seats).
	scan map[string]bool
	// mine holds, per email, the seat this call took for its entries
	// (until they are registered).
	mine   map[string]seatDoc
	taking []seatDoc // seats picked, held until the round ends
	// released, when set, is closed once another call of this process
	// lets go of seats this round could not pick: the next round waits
	// for it rather than reading the same seats again at once.
	released chan struct{}
	unseated int
	wrote    bool // a write reached MongoDB (errors no longer mean "nothing written")
	log      logrus.FieldLogger
}

func (s *Store) newAdmission(rs []invite.Reservation, scan []string) *admission {
	a := &admission{s: s, rs: rs, out: make([]Result, len(rs)), state: make([]int, len(rs)), seen: make([]bool, len(rs)),
		scan: map[string]bool{}, mine: map[string]seatDoc{}, log: s.log.WithField("step", "admit")}
	for _, c := range scan {
		a.scan[c] = true
	}
	s.admit.mu.Lock()
	for _, r := range rs {
		if _, ok := s.admit.scanned[r.Code]; !ok {
			a.scan[r.Code] = true
		}
	}
	s.admit.mu.Unlock()
	return a
}

func (a *admission) run(ctx context.Context) ([]Result, error) {
	for round := 0; round < admitRounds; round++ {
		if !a.busy() {
			break
		}
		if err := a.round(ctx, round); err != nil {
			if !a.wrote && round == 0 {
				return nil, err
			}
			a.log.WithError(err).Warn("taking seats failed; the reservations without one are retried")
			break
		}
		if ch := a.released; ch != nil && a.busy() {
			a.released = nil
			select {
			case <-ch:
			case <-ctx.Done():
			}
		}
	}
	if err := a.register(ctx); err != nil {
		return nil, err
	}
	a.settleFull(ctx)
	return a.out, nil
}

// busy reports whether a round has work: an entry without a seat, or a
// code to compare.
func (a *admission) busy() bool {
	if len(a.scan) > 0 {
		return true
	}
	for _, st := range a.state {
		if st == stPending {
			return true
		}
	}
	return false
}

// request is one seat to take in a round.
type request struct {
	doc     seatDoc
	entries []int    // the entries of this email waiting for it
	old     *seatDoc // a seat at or above max_uses this one replaces
}

// codeRound is one code's part of a round.
type codeRound struct {
	code    string
	max     int
	entries []int // pending entries of the code
	ready   map[int]bool
}

// round takes seats for the pending entries and the codes to compare:
// read max_uses (remembered), the registrations of codes to compare, then
// every seat of the codes; plan; insert the seats with one unordered
// insert; delete what the plan replaced; read max_uses again and hold the
// entries whose code did not change meanwhile.
func (a *admission) round(ctx context.Context, n int) error {
	// Seats this round picks are held from other calls of this process
	// until its insert has landed and max_uses was checked: a snapshot
	// read after that shows them taken.
	defer a.release()
	byCode := map[string]*codeRound{}
	var codes []string
	add := func(code string) *codeRound {
		cr := byCode[code]
		if cr == nil {
			cr = &codeRound{code: code, ready: map[int]bool{}}
			byCode[code] = cr
			codes = append(codes, code)
		}
		return cr
	}
	for i, st := range a.state {
		if st == stPending {
			cr := add(a.rs[i].Code)
			cr.entries = append(cr.entries, i)
		}
	}
	for c := range a.scan {
		add(c)
	}
	sort.Strings(codes)

	maxes, err := a.s.maxUses(ctx, codes, true)
	if err != nil {
		return err
	}
	for _, c := range codes {
		m, ok := maxes[c]
		if !ok {
			// No such invitation in MongoDB: no seat can be taken.
			for _, i := range byCode[c].entries {
				a.out[i] = Result{Outcome: Refused}
				a.state[i] = stDone
			}
			if len(byCode[c].entries) > 0 {
				a.log.WithField("code", c).Error("reservations for a code MongoDB has no usable invitation for: refused")
			}
			delete(a.scan, c)
			delete(byCode, c)
			codes = slices.DeleteFunc(codes, func(x string) bool { return x == c })
			continue
		}
		byCode[c].max = m
	}
	if len(codes) == 0 {
		return nil
	}

	// Registrations before seats: a registration this release wrote had
	// its seat before it, so the seats read after it shows that seat.
	var registered map[string][]string
	if len(a.scan) > 0 {
		var scanCodes []string
		for c := range a.scan {
			scanCodes = append(scanCodes, c)
		}
		if registered, err = a.s.registeredEmails(ctx, scanCodes); err != nil {
			return err
		}
	}
	var countCodes []string
	if n == 0 {
		for _, c := range codes {
			if !a.scan[c] {
				countCodes = append(countCodes, c)
			}
		}
	}
	seats, counts, err := a.s.readSeats(ctx, codes, countCodes)
	if err != nil {
		return err
	}

	var reqs []*request
	var pre, post []bson.D
	for _, c := range codes {
		cr := byCode[c]
		reg, scanned := registered[c]
		take := true
		if cnt, ok := counts[c]; ok && !scanned && cnt > len(seats[c])+a.s.deficit(c) {
			// More registrations than seats: some were written without
			// one (by an older release). Read them next round.
			a.scan[c] = true
			take = false
			a.log.WithField("code", c).WithField("registrations", cnt).WithField("seats", len(seats[c])).
				Warn("registrations without a seat found; seating them")
		}
		if !scanned {
			reg = nil
		}
		r, p, q := a.plan(cr, seats[c], reg, take)
		reqs, pre, post = append(reqs, r...), append(pre, p...), append(post, q...)
	}

	if len(pre) > 0 {
		if _, err := a.s.seats.DeleteMany(ctx, bson.D{{Key: "$or", Value: pre}}); err != nil {
			return fmt.Errorf("%w: give seats back: %w", ErrDatabase, err)
		}
	}
	if err := a.insert(ctx, reqs, byCode, &post); err != nil {
		return err
	}
	if len(post) > 0 {
		if _, err := a.s.seats.DeleteMany(ctx, bson.D{{Key: "$or", Value: post}}); err != nil {
			// Only space or a replaced seat above max_uses is left; the
			// next round sees it and deletes it again.
			a.log.WithError(err).Warn("delete replaced seats")
		}
	}

	// Check max_uses again, after every seat of this round was taken: a
	// code cut meanwhile may have seats above its new maximum that only a
	// round reading it sees.
	var verify []string
	for _, c := range codes {
		if len(byCode[c].ready) > 0 {
			verify = append(verify, c)
		}
	}
	if len(verify) == 0 {
		return nil
	}
	now, err := a.s.maxUses(ctx, verify, false)
	if err != nil {
		return err
	}
	for _, c := range verify {
		cr := byCode[c]
		if now[c] != cr.max {
			a.log.WithFields(logrus.Fields{"code": c, "was": cr.max, "now": now[c]}).Info("max_uses changed while taking seats; taking them again")
			continue
		}
		for i := range cr.ready {
			a.state[i] = stHeld
		}
	}
	return nil
}

// plan decides one code's round from its seats: which entries keep a seat
// their email holds, which surplus seats to delete, and which seats to
// take. Two things come before any entry: seats at or above max_uses (a
// cut left them) move below it, and, when registered is given (the code's
// registrations were read before its seats), registrations without a seat
// get one. While either waits, no entry of the code is made ready, not
// even one keeping its seat: a registration is written only from a round
// that saw every seat below max_uses (docs/ARCHITECTURE.md has why). take
// is false when the registrations must be read first. It returns the
// seats to take, and the seats to delete before (pre) and after (post)
// taking them.
func (a *admission) plan(cr *codeRound, docs []seatDoc, registered []string, take bool) (reqs []*request, pre, post []bson.D) {
	m := cr.max
	// This call's own seats, taken for entries still pending, in an
	// earlier round whose max_uses check failed. While seats above
	// max_uses wait, they yield their place: nobody else registers on
	// them (a registering round sees the seats above and stops).
	mine := map[string]seatDoc{}
	for _, i := range cr.entries {
		if d, ok := a.mine[a.rs[i].Canonical]; ok && d.Code == cr.code {
			mine[d.ID] = d
		}
	}
	if len(mine) > 0 && slices.ContainsFunc(docs, func(d seatDoc) bool { return d.K >= m }) {
		kept := docs[:0:0]
		for _, d := range docs {
			if own, ok := mine[d.ID]; ok && own.Email == d.Email {
				pre = append(pre, bson.D{{Key: "_id", Value: d.ID}, {Key: "email", Value: d.Email}})
				delete(a.mine, d.Email)
				continue
			}
			kept = append(kept, d)
		}
		docs = kept
	}

	taken := make(map[int]bool, len(docs))
	byEmail := map[string][]seatDoc{}
	anon := 0
	var high []seatDoc // seats at or above max_uses to move below it
	for _, d := range docs {
		taken[d.K] = true
		if d.Email == "" {
			anon++
			if d.K >= m {
				high = append(high, d)
			}
			continue
		}
		byEmail[d.Email] = append(byEmail[d.Email], d)
	}
	dups := 0
	owner := make(map[string]int, len(byEmail)) // email → its lowest seat
	for e, ds := range byEmail {
		sort.Slice(ds, func(i, j int) bool { return ds[i].K < ds[j].K })
		owner[e] = ds[0].K
		// An email holding several seats (two writers took one each for
		// it) keeps its lowest; nobody deletes a seat of an email without
		// seeing a lower one of it, so it always keeps one.
		for _, d := range ds[1:] {
			post = append(post, bson.D{{Key: "_id", Value: d.ID}, {Key: "email", Value: d.Email}})
			dups++
		}
		if ds[0].K >= m {
			high = append(high, ds[0])
		}
	}
	free, open, released := a.s.freeSeats(cr.code, m, taken)
	if len(free) < open {
		// Some free seats are this process's other calls' for now; if the
		// entries run out of seats, wait for those calls' rounds to end.
		a.released = released
	}
	pick := newPicker(free)
	full := open == 0 && dups == 0 // every seat below max_uses is another email's
	defer func() { a.hold(cr.code, reqs) }()

	for i := range high {
		d := high[i]
		k, ok := pick.take()
		if !ok {
			a.log.WithFields(logrus.Fields{"code": cr.code, "k": d.K, "max_uses": m}).
				Warn("a seat above max_uses cannot move below it: every seat below is taken; nothing is registered on this code until one is free")
			break
		}
		reqs = append(reqs, &request{doc: seatDoc{ID: seatID(cr.code, k), Code: cr.code, K: k, Email: d.Email}, old: &high[i]})
	}
	if registered != nil {
		var lacking []string
		for _, e := range registered {
			if _, ok := owner[e]; !ok {
				lacking = append(lacking, e)
			}
		}
		sort.Strings(lacking)
		// Seats without an email (an earlier release's) stand for as many
		// registrations.
		need := max(len(lacking)-anon, 0)
		short := 0
		for _, e := range lacking[:need] {
			k, ok := pick.take()
			if !ok {
				short++
				continue
			}
			reqs = append(reqs, &request{doc: seatDoc{ID: seatID(cr.code, k), Code: cr.code, K: k, Email: e}})
		}
		if len(reqs) == 0 && len(high) == 0 {
			// Every registration holds a seat, or none is left for it.
			delete(a.scan, cr.code)
			a.s.setDeficit(cr.code, short)
			if short > 0 {
				a.unseated += short
				a.s.countUnseated(short)
				a.log.WithFields(logrus.Fields{"code": cr.code, "registrations": short, "max_uses": m}).
					Warn("registrations without a seat and no seat free: MongoDB already holds more than max_uses for this code")
			}
		}
	}
	if len(high) > 0 || len(reqs) > 0 || !take {
		// Entries wait; with every seat below max_uses taken and nothing
		// left to move, they are over the cap.
		if len(high) > 0 && full {
			for _, i := range cr.entries {
				a.noSeat(i, true)
			}
		}
		return reqs, pre, post
	}

	// Entries: one seat per email, however often it is in the batch.
	wants := map[string][]int{}
	var order []string
	for _, i := range cr.entries {
		e := a.rs[i].Canonical
		if _, ok := owner[e]; ok {
			cr.ready[i] = true // below max_uses: none is above
			continue
		}
		if wants[e] == nil {
			order = append(order, e)
		}
		wants[e] = append(wants[e], i)
	}
	rand.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
	for _, e := range order {
		k, ok := pick.take()
		if !ok {
			for _, i := range wants[e] {
				a.noSeat(i, full)
			}
			continue
		}
		reqs = append(reqs, &request{doc: seatDoc{ID: seatID(cr.code, k), Code: cr.code, K: k, Email: e}, entries: wants[e]})
	}
	return reqs, pre, post
}

// freeSeats returns the seats below m not in taken that no other Admit of
// this process is taking right now (they would only collide), and how many
// are not in taken at all.
//
// released is closed when one of those calls ends its round.
func (s *Store) freeSeats(code string, m int, taken map[int]bool) (free []int, open int, released chan struct{}) {
	s.admit.mu.Lock()
	defer s.admit.mu.Unlock()
	busy := s.admit.taking[code]
	for k := 0; k < m; k++ {
		if taken[k] {
			continue
		}
		open++
		if busy[k] == 0 {
			free = append(free, k)
		}
	}
	return free, open, s.admit.released
}

// hold marks the seats of reqs as being taken by this call until its
// round ends (release), so that the other calls of this process pick
// others.
func (a *admission) hold(code string, reqs []*request) {
	if len(reqs) == 0 {
		return
	}
	a.s.admit.mu.Lock()
	defer a.s.admit.mu.Unlock()
	busy := a.s.admit.taking[code]
	if busy == nil {
		busy = map[int]int{}
		a.s.admit.taking[code] = busy
	}
	for _, r := range reqs {
		busy[r.doc.K]++
		a.taking = append(a.taking, r.doc)
	}
}

// release ends hold.
func (a *admission) release() {
	if len(a.taking) == 0 {
		return
	}
	a.s.admit.mu.Lock()
	defer a.s.admit.mu.Unlock()
	for _, d := range a.taking {
		busy := a.s.admit.taking[d.Code]
		if busy[d.K]--; busy[d.K] <= 0 {
			delete(busy, d.K)
		}
		if len(busy) == 0 {
			delete(a.s.admit.taking, d.Code)
		}
	}
	a.taking = nil
	close(a.s.admit.released)
	a.s.admit.released = make(chan struct{})
}

// noSeat notes that entry i found no seat in this round. When every seat
// below max_uses was another email's (full), in two rounds, the entry is
// over the cap; otherwise the seats ran out within the round and the next
// one tries again.
func (a *admission) noSeat(i int, full bool) {
	if !full {
		return
	}
	if a.seen[i] {
		a.state[i] = stFull
	}
	a.seen[i] = true
}

// picker hands out a round's free seats: consecutive free ones from a
// random starting point, so that concurrent writers taking seats of one
// code (shard workers, replicas, the committer) rarely pick the same: a
// collision costs a duplicate key and another round (and, on the
// MongoDB-wire server the tests use, a slow insert).
type picker struct {
	free []int
	next int
	left int
}

func newPicker(free []int) *picker {
	p := &picker{free: free, left: len(free)}
	if len(free) > 0 {
		p.next = rand.IntN(len(free))
	}
	return p
}

func (p *picker) take() (int, bool) {
	if p.left == 0 {
		return 0, false
	}
	k := p.free[p.next]
	p.next = (p.next + 1) % len(p.free)
	p.left--
	return k, true
}

// insert writes the round's seats with one unordered insert. A seat that
// lands makes its entries ready; a duplicate key (another writer took that
// seat) leaves them for the next round. A seat that replaces one above
// max_uses adds the old one to deletes.
func (a *admission) insert(ctx context.Context, reqs []*request, byCode map[string]*codeRound, deletes *[]bson.D) error {
	if len(reqs) == 0 {
		return nil
	}
	now := a.s.now().UTC()
	docs := make([]any, len(reqs))
	for i, r := range reqs {
		r.doc.At = now
		docs[i] = r.doc
	}
	_, err := a.s.seats.InsertMany(ctx, docs, options.InsertMany().SetOrdered(false))
	ok := make([]bool, len(reqs))
	for i := range ok {
		ok[i] = true
	}
	if err != nil {
		var bwe mongo.BulkWriteException
		if !errors.As(err, &bwe) {
			return fmt.Errorf("%w: insert seats: %w", ErrDatabase, err)
		}
		if bwe.WriteConcernError != nil {
			// Perhaps written, not durably: the next round reads them.
			for i := range ok {
				ok[i] = false
			}
		}
		for _, we := range bwe.WriteErrors {
			if we.Index >= 0 && we.Index < len(ok) {
				ok[we.Index] = false
			}
		}
	}
	a.wrote = true
	for i, r := range reqs {
		if !ok[i] {
			continue
		}
		if r.old != nil {
			del := bson.D{{Key: "_id", Value: r.old.ID}, {Key: "email", Value: r.old.Email}}
			if r.old.Email == "" {
				del = bson.D{{Key: "_id", Value: r.old.ID}, {Key: "email", Value: bson.D{{Key: "$exists", Value: false}}}}
			}
			*deletes = append(*deletes, del)
		}
		if len(r.entries) > 0 {
			a.mine[r.doc.Email] = r.doc
		}
		for _, e := range r.entries {
			byCode[r.doc.Code].ready[e] = true
		}
	}
	return nil
}

// register writes the held entries' registrations (Persist) and settles
// them; an email MongoDB holds on another code gives its seats of this
// code back.
func (a *admission) register(ctx context.Context) error {
	var idx []int
	var rows []invite.Reservation
	for i, st := range a.state {
		if st == stHeld {
			idx = append(idx, i)
			rows = append(rows, a.rs[i])
		}
	}
	if len(rows) == 0 {
		return nil
	}
	res, err := a.s.Persist(ctx, rows)
	if err != nil {
		if !a.wrote {
			return err
		}
		return nil // every held entry stays Failed; its seat waits for the retry
	}
	var release []bson.D
	for j, i := range idx {
		a.out[i] = res[j]
		if res[j].Outcome == Conflict {
			// The email is another code's for good (registrations are
			// never deleted or moved): none of its seats here is needed.
			release = append(release, bson.D{{Key: "code", Value: a.rs[i].Code}, {Key: "email", Value: a.rs[i].Canonical}})
		}
	}
	if len(release) > 0 {
		if err := a.s.releaseSeats(ctx, release); err != nil {
			a.log.WithError(err).Warn("could not give back the seats of emails registered on another code; they stay taken until a reseed")
		}
	}
	return nil
}

// settleFull settles the entries for which no seat was free: an email
// MongoDB already holds is AlreadyWritten (same code) or a Conflict
// (another); the others are Refused. A failed read leaves them Failed.
func (a *admission) settleFull(ctx context.Context) {
	var ids []string
	for i, st := range a.state {
		if st == stFull {
			ids = append(ids, a.rs[i].Canonical)
		}
	}
	if len(ids) == 0 {
		return
	}
	owners, err := a.s.owners(ctx, ids)
	if err != nil {
		a.log.WithError(err).Warn("read the registrations of refused reservations; they are retried")
		return
	}
	for i, st := range a.state {
		if st != stFull {
			continue
		}
		r := a.rs[i]
		switch owner, ok := owners[r.Canonical]; {
		case ok && owner == r.Code:
			a.out[i] = Result{Outcome: AlreadyWritten}
		case ok:
			a.out[i] = Result{Outcome: Conflict, Owner: owner}
		default:
			a.out[i] = Result{Outcome: Refused}
		}
	}
}

// maxUses returns max_uses per code (codes without a usable invitation are
// absent). With cached, a value read before is used.
func (s *Store) maxUses(ctx context.Context, codes []string, cached bool) (map[string]int, error) {
	out := make(map[string]int, len(codes))
	var read []string
	s.admit.mu.Lock()
	for _, c := range codes {
		if m, ok := s.admit.max[c]; ok && cached {
			out[c] = m
			continue
		}
		read = append(read, c)
	}
	s.admit.mu.Unlock()
	if len(read) == 0 {
		return out, nil
	}
	cur, err := s.invMajority.Find(ctx, bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: read}}}})
	if err != nil {
		return nil, fmt.Errorf("%w: read invitations: %w", ErrDatabase, err)
	}
	defer cur.Close(ctx)
	fresh := map[string]int{}
	for cur.Next(ctx) {
		inv, err := decodeInvitation(cur.Current)
		if err != nil {
			s.log.WithError(err).WithField("code", cur.Current.Lookup("_id").String()).Error("ignoring unusable invitation document")
			continue
		}
		fresh[inv.Code] = inv.MaxUses
	}
	if err := cur.Err(); err != nil {
		return nil, fmt.Errorf("%w: read invitations: %w", ErrDatabase, err)
	}
	s.admit.mu.Lock()
	for _, c := range read {
		if m, ok := fresh[c]; ok {
			out[c] = m
			s.admit.max[c] = m
		} else {
			delete(s.admit.max, c)
		}
	}
	s.admit.mu.Unlock()
	return out, nil
}

// readSeats returns the seats of codes and, concurrently, the number of
// registrations of each of countCodes.
func (s *Store) readSeats(ctx context.Context, codes, countCodes []string) (map[string][]seatDoc, map[string]int, error) {
	var wg sync.WaitGroup
	var mu sync.Mutex
	counts := make(map[string]int, len(countCodes))
	var countErr error
	for _, c := range countCodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, err := s.reg.CountDocuments(ctx, bson.D{{Key: "invitation", Value: c}})
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				countErr = err
				return
			}
			counts[c] = int(n)
		}()
	}
	seats, err := s.seatsOf(ctx, codes)
	wg.Wait()
	if err != nil {
		return nil, nil, err
	}
	if countErr != nil {
		// The comparison waits for the next batch; the seats are good.
		s.log.WithError(countErr).Warn("count registrations")
		counts = nil
	}
	return seats, counts, nil
}

// seatsOf returns every seat of codes (majority read: only seats that
// survive a failover count).
func (s *Store) seatsOf(ctx context.Context, codes []string) (map[string][]seatDoc, error) {
	cur, err := s.seatsMajority.Find(ctx, bson.D{{Key: "code", Value: bson.D{{Key: "$in", Value: codes}}}},
		options.Find().SetProjection(bson.D{{Key: "code", Value: 1}, {Key: "k", Value: 1}, {Key: "email", Value: 1}}))
	if err != nil {
		return nil, fmt.Errorf("%w: read seats: %w", ErrDatabase, err)
	}
	var docs []seatDoc
	if err := cur.All(ctx, &docs); err != nil {
		return nil, fmt.Errorf("%w: read seats: %w", ErrDatabase, err)
	}
	out := make(map[string][]seatDoc, len(codes))
	for _, d := range docs {
		out[d.Code] = append(out[d.Code], d)
	}
	return out, nil
}

// registeredEmails returns the canonical emails registered on each of
// codes (every code present, perhaps with none).
func (s *Store) registeredEmails(ctx context.Context, codes []string) (map[string][]string, error) {
	out := make(map[string][]string, len(codes))
	for _, c := range codes {
		out[c] = []string{}
	}
	cur, err := s.regMajority.Find(ctx, bson.D{{Key: "invitation", Value: bson.D{{Key: "$in", Value: codes}}}},
		options.Find().SetProjection(bson.D{{Key: "invitation", Value: 1}}).SetBatchSize(1000))
	if err != nil {
		return nil, fmt.Errorf("%w: read registrations: %w", ErrDatabase, err)
	}
	defer cur.Close(ctx)
	for cur.Next(ctx) {
		id, ok1 := cur.Current.Lookup("_id").StringValueOK()
		c, ok2 := cur.Current.Lookup("invitation").StringValueOK()
		if ok1 && ok2 {
			out[c] = append(out[c], id)
		}
	}
	if err := cur.Err(); err != nil {
		return nil, fmt.Errorf("%w: read registrations: %w", ErrDatabase, err)
	}
	return out, nil
}

// owners returns the code MongoDB holds for each of the canonical emails
// that is registered (majority read).
func (s *Store) owners(ctx context.Context, ids []string) (map[string]string, error) {
	cur, err := s.regMajority.Find(ctx, bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: ids}}}},
		options.Find().SetProjection(bson.D{{Key: "invitation", Value: 1}}))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrDatabase, err)
	}
	defer cur.Close(ctx)
	out := map[string]string{}
	for cur.Next(ctx) {
		id, _ := cur.Current.Lookup("_id").StringValueOK()
		c, _ := cur.Current.Lookup("invitation").StringValueOK()
		out[id] = c
	}
	if err := cur.Err(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrDatabase, err)
	}
	return out, nil
}

// releaseSeats deletes the seats matching any of filters (each names a
// code and an email). It runs past ctx's end, up to releaseTimeout: its
// caller knows the seats are not needed.
func (s *Store) releaseSeats(ctx context.Context, filters []bson.D) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
	defer cancel()
	if _, err := s.seats.DeleteMany(ctx, bson.D{{Key: "$or", Value: filters}}); err != nil {
		return fmt.Errorf("%w: release seats: %w", ErrDatabase, err)
	}
	return nil
}

func (s *Store) deficit(code string) int {
	s.admit.mu.Lock()
	defer s.admit.mu.Unlock()
	return s.admit.scanned[code]
}

func (s *Store) setDeficit(code string, n int) {
	s.admit.mu.Lock()
	defer s.admit.mu.Unlock()
	s.admit.scanned[code] = n
}

func (s *Store) countUnseated(n int) {
	if s.metrics != nil && s.metrics.Unseated != nil {
		s.metrics.Unseated.Add(float64(n))
	}
}

// ReleaseStrandedSeats deletes the seats of code held by an email that has
// no registration of code and is not in pending, taken before before: a
// writer took them and the reservation never got written (its stream entry
// was lost with Redis' data, or MongoDB refused it). A reseed calls it with
// the code frozen and its pending reservations written, so no writer is
// about to register on them; before spares seats of writers still under
// way. Seats without an email are kept. It returns how many it deleted.
func (s *Store) ReleaseStrandedSeats(ctx context.Context, code string, pending []string, before time.Time) (int, error) {
	n, err := s.ReleaseStrandedSeatsOf(ctx, []string{code}, map[string][]string{code: pending}, before)
	return n[code], err
}

// ReleaseStrandedSeatsOf is ReleaseStrandedSeats for several codes at
// once (pending by code), in one read of their registrations and one of
// their seats; it returns the seats given back per code.
func (s *Store) ReleaseStrandedSeatsOf(ctx context.Context, codes []string, pending map[string][]string, before time.Time) (map[string]int, error) {
	regs, err := s.registeredEmails(ctx, codes)
	if err != nil {
		return nil, err
	}
	keep := make(map[string]map[string]bool, len(codes))
	for _, code := range codes {
		k := make(map[string]bool, len(regs[code])+len(pending[code]))
		for _, e := range regs[code] {
			k[e] = true
		}
		for _, e := range pending[code] {
			k[e] = true
		}
		keep[code] = k
	}
	cur, err := s.seatsMajority.Find(ctx, bson.D{{Key: "code", Value: bson.D{{Key: "$in", Value: codes}}}})
	if err != nil {
		return nil, fmt.Errorf("%w: read seats: %w", ErrDatabase, err)
	}
	var docs []seatDoc
	if err := cur.All(ctx, &docs); err != nil {
		return nil, fmt.Errorf("%w: read seats: %w", ErrDatabase, err)
	}
	out := map[string]int{}
	byCode := map[string][]bson.D{}
	for _, d := range docs {
		if d.Email == "" || keep[d.Code] == nil || keep[d.Code][d.Email] || (!d.At.IsZero() && !d.At.Before(before)) {
			continue
		}
		f := bson.D{{Key: "_id", Value: d.ID}, {Key: "email", Value: d.Email}}
		if !d.At.IsZero() {
			f = append(f, bson.E{Key: "at", Value: d.At})
		}
		byCode[d.Code] = append(byCode[d.Code], f)
	}
	for code, filters := range byCode {
		res, err := s.seats.DeleteMany(ctx, bson.D{{Key: "$or", Value: filters}})
		if err != nil {
			return out, fmt.Errorf("%w: release stranded seats: %w", ErrDatabase, err)
		}
		if res.DeletedCount > 0 {
			out[code] = int(res.DeletedCount)
			s.log.WithFields(logrus.Fields{"code": code, "seats": res.DeletedCount}).Warn("released seats no registration holds")
		}
	}
	return out, nil
}
