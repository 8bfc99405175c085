package ldapmap

// CacheOptions' defaults for TTL and NegativeTTL, exported so that the
// configuration fills in, documents and checks the values NewCache uses.
// The values are set once, next to CacheOptions in cache.go.
const (
	DefaultCacheTTL    = defaultCacheTTL
	DefaultNegativeTTL = defaultNegativeTTL
)
