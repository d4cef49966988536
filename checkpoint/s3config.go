package checkpoint

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// S3Config configures the client of S3-compatible object storage (AWS S3,
// MinIO, Ceph RGW, versitygw, ...). Every field has a flag (RegisterFlags)
// and falls back to the AWS SDKs' environment variables.
//
// Credentials come, in this order, from the fields AccessKeyID and
// SecretAccessKey (set by programs, never by a flag), the environment
// (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN) or an AWS
// shared credentials file (CredentialsFile, else AWS_SHARED_CREDENTIALS_FILE
// or ~/.aws/credentials and ~/.aws/config; profile Profile, else AWS_PROFILE
// or "default"). Secrets are never logged: Redacted is what may be shown.
type S3Config struct {
	// Endpoint is host[:port] or http(s)://host[:port]; without a scheme
	// HTTPS is used. Empty: AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, else
	// s3.amazonaws.com.
	Endpoint string
	// Region is the bucket's region. Empty: AWS_REGION,
	// AWS_DEFAULT_REGION, else us-east-1.
	Region string
	// PathStyle addresses the bucket in the path (http://host/bucket/key)
	// instead of the host name (http://bucket.host/key). Most
	// self-hosted servers need it; addresses that are IPs or localhost
	// get it anyway.
	PathStyle bool
	// CredentialsFile is an AWS shared credentials file.
	CredentialsFile string
	// Profile is the profile of the credentials file.
	Profile string
	// Concurrency bounds the parallel transfers of one publish, restore
	// or verification; 0 means DefaultS3Concurrency.
	Concurrency int
	// Timeout bounds each request (a stalled server fails the operation,
	// which is retried later); 0 means DefaultS3Timeout.
	Timeout time.Duration

	// AccessKeyID and SecretAccessKey set the credentials directly
	// (programs and tests). Never printed.
	AccessKeyID     string `json:"-"`
	SecretAccessKey string `json:"-"`
}

const (
	// DefaultS3Concurrency is the number of parallel object transfers of
	// one publish, restore or verification.
	DefaultS3Concurrency = 8
	// DefaultS3Timeout bounds each request to the object storage.
	DefaultS3Timeout = 2 * time.Minute
	// s3MaxRetries is how often the client retries a failed request
	// (throttling, 5xx, network) before the operation fails. The
	// consumer retries a failed snapshot at the next interval anyway.
	s3MaxRetries = 3
	// s3PartSize is the multipart upload part size, which is also the
	// buffer one upload of a file larger than it holds.
	s3PartSize = 16 << 20
)

// RegisterFlags adds --s3-endpoint, --s3-region, --s3-path-style,
// --s3-credentials-file, --s3-profile, --s3-concurrency and --s3-timeout.
func (c *S3Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Endpoint, "s3-endpoint", "", "with an s3:// --checkpoint-dir: object storage endpoint, host:port or http(s)://host:port (default: AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL or s3.amazonaws.com; no scheme = HTTPS)")
	fs.StringVar(&c.Region, "s3-region", "", "with an s3:// --checkpoint-dir: the bucket's region (default: AWS_REGION, AWS_DEFAULT_REGION or us-east-1)")
	fs.BoolVar(&c.PathStyle, "s3-path-style", false, "with an s3:// --checkpoint-dir: path-style bucket addressing (host/bucket/key), needed by most self-hosted servers")
	fs.StringVar(&c.CredentialsFile, "s3-credentials-file", "", "with an s3:// --checkpoint-dir: AWS shared credentials file, used when AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY are not set (default: AWS_SHARED_CREDENTIALS_FILE or ~/.aws/credentials)")
	fs.StringVar(&c.Profile, "s3-profile", "", "profile of the credentials file (default: AWS_PROFILE or default)")
	fs.IntVar(&c.Concurrency, "s3-concurrency", DefaultS3Concurrency, "parallel object transfers of one snapshot upload, restore or verification")
	fs.DurationVar(&c.Timeout, "s3-timeout", DefaultS3Timeout, "timeout of each object storage request")
}

// Validate checks the settings that can be checked without the network.
func (c S3Config) Validate() error {
	var errs []error
	if c.Concurrency < 0 {
		errs = append(errs, errors.New("--s3-concurrency must not be negative"))
	}
	if c.Timeout < 0 {
		errs = append(errs, errors.New("--s3-timeout must not be negative"))
	}
	if _, _, err := c.endpoint(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Redacted describes the configuration without secrets, for logs and the
// status API: endpoint, region, addressing and where the credentials come
// from (never the secret key; the access key id is shortened).
func (c S3Config) Redacted() map[string]any {
	host, secure, err := c.endpoint()
	ep := host
	if err != nil {
		ep = "invalid"
	} else if secure {
		ep = "https://" + host
	} else {
		ep = "http://" + host
	}
	out := map[string]any{
		"endpoint":    ep,
		"region":      c.region(),
		"path_style":  c.PathStyle,
		"concurrency": c.concurrency(),
		"timeout":     c.timeout().String(),
	}
	switch {
	case c.AccessKeyID != "":
		out["credentials"] = "configured by the program"
		out["access_key_id"] = shortKey(c.AccessKeyID)
	case os.Getenv("AWS_ACCESS_KEY_ID") != "":
		out["credentials"] = "environment (AWS_ACCESS_KEY_ID)"
		out["access_key_id"] = shortKey(os.Getenv("AWS_ACCESS_KEY_ID"))
	case c.CredentialsFile != "":
		out["credentials"] = "file " + c.CredentialsFile
	default:
		out["credentials"] = "AWS shared credentials file"
	}
	if c.Profile != "" {
		out["profile"] = c.Profile
	}
	return out
}

// shortKey shows the first 4 characters of an access key id.
func shortKey(k string) string {
	if len(k) <= 4 {
		return "****"
	}
	return k[:4] + "****"
}

func (c S3Config) region() string {
	for _, v := range []string{c.Region, os.Getenv("AWS_REGION"), os.Getenv("AWS_DEFAULT_REGION")} {
		if v != "" {
			return v
		}
	}
	return "us-east-1"
}

func (c S3Config) concurrency() int {
	if c.Concurrency <= 0 {
		return DefaultS3Concurrency
	}
	return c.Concurrency
}

func (c S3Config) timeout() time.Duration {
	if c.Timeout <= 0 {
		return DefaultS3Timeout
	}
	return c.Timeout
}

// endpoint returns host[:port] and whether to use TLS.
func (c S3Config) endpoint() (string, bool, error) {
	ep := c.Endpoint
	for _, v := range []string{os.Getenv("AWS_ENDPOINT_URL_S3"), os.Getenv("AWS_ENDPOINT_URL")} {
		if ep == "" {
			ep = v
		}
	}
	if ep == "" {
		return "s3.amazonaws.com", true, nil
	}
	secure := true
	if i := strings.Index(ep, "://"); i >= 0 {
		u, err := url.Parse(ep)
		if err != nil {
			return "", false, fmt.Errorf("--s3-endpoint %q: %w", ep, err)
		}
		switch u.Scheme {
		case "http":
			secure = false
		case "https":
		default:
			return "", false, fmt.Errorf("--s3-endpoint %q: scheme must be http or https", ep)
		}
		if u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
			return "", false, fmt.Errorf("--s3-endpoint %q: want http(s)://host[:port] only (credentials go in the environment or a credentials file)", ep)
		}
		ep = u.Host
	}
	if ep == "" || strings.ContainsAny(ep, "/@ ") {
		return "", false, fmt.Errorf("--s3-endpoint %q: want host[:port] or http(s)://host[:port]", c.Endpoint)
	}
	return ep, secure, nil
}

// credentials resolves the credentials (see S3Config) and fails when there
// are none: a checkpoint bucket is never anonymous.
func (c S3Config) credentials() (*credentials.Credentials, error) {
	var creds *credentials.Credentials
	if c.AccessKeyID != "" || c.SecretAccessKey != "" {
		creds = credentials.NewStaticV4(c.AccessKeyID, c.SecretAccessKey, "")
	} else {
		creds = credentials.NewChainCredentials([]credentials.Provider{
			&credentials.EnvAWS{},
			&credentials.FileAWSCredentials{Filename: c.CredentialsFile, Profile: c.Profile},
		})
	}
	v, err := creds.GetWithContext(nil)
	if err != nil || v.AccessKeyID == "" || v.SecretAccessKey == "" {
		where := "the credentials file"
		if c.CredentialsFile != "" {
			where = c.CredentialsFile
		}
		if err == nil {
			err = errors.New("none found")
		}
		return nil, fmt.Errorf("checkpoint: no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or use --s3-credentials-file (tried the environment and %s): %w", where, err)
	}
	return creds, nil
}

// newClient builds the client. Requests are retried s3MaxRetries times
// and each is bounded by the timeout.
func (c S3Config) newClient() (*minio.Client, error) {
	host, secure, err := c.endpoint()
	if err != nil {
		return nil, fmt.Errorf("checkpoint: %w", err)
	}
	creds, err := c.credentials()
	if err != nil {
		return nil, err
	}
	lookup := minio.BucketLookupAuto
	if c.PathStyle {
		lookup = minio.BucketLookupPath
	}
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConnsPerHost:   2 * c.concurrency(),
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: c.timeout(),
		ExpectContinueTimeout: time.Second,
	}
	cl, err := minio.New(host, &minio.Options{Creds: creds, Secure: secure, Region: c.region(), BucketLookup: lookup,
		Transport: tr, MaxRetries: s3MaxRetries})
	if err != nil {
		return nil, fmt.Errorf("checkpoint: S3 client for %s: %w", host, err)
	}
	return cl, nil
}

// ParseS3URL splits s3://bucket/prefix into the bucket and the key prefix
// (without slashes at either end; may be empty).
func ParseS3URL(loc string) (bucket, prefix string, err error) {
	if !IsS3Location(loc) {
		return "", "", fmt.Errorf("checkpoint: %q is not an s3://bucket/prefix URL", loc)
	}
	rest := loc[len("s3://"):]
	bucket, prefix, _ = strings.Cut(rest, "/")
	if strings.Contains(bucket, "@") || strings.Contains(bucket, ":") {
		return "", "", fmt.Errorf("checkpoint: %q: credentials and ports do not go in the location (use the environment, --s3-credentials-file and --s3-endpoint)", loc)
	}
	if len(bucket) < 3 || len(bucket) > 63 {
		return "", "", fmt.Errorf("checkpoint: %q: bucket name must have 3 to 63 characters", loc)
	}
	for _, ch := range bucket {
		if !(ch >= 'a' && ch <= 'z' || ch >= '0' && ch <= '9' || ch == '.' || ch == '-') {
			return "", "", fmt.Errorf("checkpoint: %q: invalid bucket name %q", loc, bucket)
		}
	}
	prefix = strings.Trim(prefix, "/")
	for _, part := range strings.Split(prefix, "/") {
		if prefix != "" && (part == "" || part == "." || part == ".." || strings.HasPrefix(part, tmpPrefix)) {
			return "", "", fmt.Errorf("checkpoint: %q: invalid key prefix %q", loc, prefix)
		}
	}
	if strings.ContainsAny(prefix, "?#\\\x00") {
		return "", "", fmt.Errorf("checkpoint: %q: invalid key prefix %q", loc, prefix)
	}
	return bucket, prefix, nil
}
