package bench_test

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"

	"github.com/gin-gonic/gin"
	"github.com/redis/go-redis/v9"
)

// floorEnv carries "listen|redis address" to the floor's process.
const floorEnv = "INVITEGATE_BENCH_FLOOR"

// floorScript is the trivial script of the floor's one round trip.
var floorScript = redis.NewScript("return 1")

type floorAnswer struct {
	Invitation string `json:"invitation"`
	Email      string `json:"email"`
	Status     string `json:"status"`
}

// serveFloorIfChild runs the floor when this test binary was started as
// the floor's process (see startFloor), and never returns then.
//
// The floor is the least any one-round-trip design must do per signup: gin
// routes the request, the JSON body is decoded, one EVALSHA goes to Redis
// and a JSON answer comes back. It validates nothing, stores nothing and
// decides nothing, so no real service can be faster with one round trip
// per request; the ratio to it is what docs/BENCHMARKS.md reports.
func serveFloorIfChild() {
	spec := os.Getenv(floorEnv)
	if spec == "" {
		return
	}
	listen, redisAddr, _ := strings.Cut(spec, "|")
	// The service's pool size (go-redis' default, 10 per CPU).
	rdb := redis.NewClient(&redis.Options{Addr: redisAddr})
	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	r.POST("/invitations/:code", func(c *gin.Context) {
		var body struct {
			Email string `json:"email"`
		}
		if err := json.NewDecoder(c.Request.Body).Decode(&body); err != nil || body.Email == "" {
			c.AbortWithStatus(http.StatusBadRequest)
			return
		}
		if err := floorScript.Run(c.Request.Context(), rdb, []string{"floor"}, body.Email).Err(); err != nil {
			c.AbortWithStatus(http.StatusServiceUnavailable)
			return
		}
		c.JSON(http.StatusCreated, floorAnswer{Invitation: c.Param("code"), Email: body.Email, Status: "registered"})
	})
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, "floor:", err)
		os.Exit(1)
	}
	fmt.Println("ready")
	fmt.Fprintln(os.Stderr, "floor:", http.Serve(ln, r))
	os.Exit(1)
}
