// Package lua embeds the Redis Lua scripts of invitegate. The scripts live
// here as .lua files so they can be read, linted and reviewed as Lua; Go code
// loads them once as *redis.Script in internal/reserve.
package lua

import _ "embed"

// Reserve is one atomic signup attempt on one shard (see reserve.lua).
//
//go:embed reserve.lua
var Reserve string

// Steal takes tokens from one shard's bucket (see steal.lua).
//
//go:embed steal.lua
var Steal string

// Seed creates one shard's bucket unless it exists (see seed.lua).
//
//go:embed seed.lua
var Seed string

// GiveBack returns the token of a reservation MongoDB refused (see giveback.lua).
//
//go:embed giveback.lua
var GiveBack string

// Unlock releases a lock held by the caller (see unlock.lua).
//
//go:embed unlock.lua
var Unlock string

// Adjust changes one shard's existing bucket: tokens, disabled, the
// confirmation window, the sold-out mark (see adjust.lua).
//
//go:embed adjust.lua
var Adjust string

// Freeze stops a code's signups on one shard during a reseed (see freeze.lua).
//
//go:embed freeze.lua
var Freeze string

// History records which Redis history a shard's data belongs to (see
// history.lua).
//
//go:embed history.lua
var History string

// Rebuild replaces one shard's bucket after a reseed (see rebuild.lua).
//
//go:embed rebuild.lua
var Rebuild string

// SeatHint hands out, or moves past taken seats, the seat hints of MongoDB's
// cap for several codes in one call (see seathint.lua).
//
//go:embed seathint.lua
var SeatHint string

// Expire gives back the seat of one hold past its deadline, once (see
// expire.lua).
//
//go:embed expire.lua
var Expire string

// Confirm turns one hold into a registration (see confirm.lua).
//
//go:embed confirm.lua
var Confirm string

// Restamp counts one live hold for a reseed's rebuild and moves it into
// the new epoch (see restamp.lua).
//
//go:embed restamp.lua
var Restamp string

// RestoreHold puts back a live hold MongoDB recorded (see restorehold.lua).
//
//go:embed restorehold.lua
var RestoreHold string

// DueHold lists one shard's holds due by Redis' clock (see duehold.lua).
//
//go:embed duehold.lua
var DueHold string
