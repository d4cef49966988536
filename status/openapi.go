package status

import (
	_ "embed"
	"net/http"
	"slices"
)

// openAPIDoc is the OpenAPI 3 document of the API (openapi.yaml), served at
// GET /api/v1/openapi.yaml. openapi_test.go validates every handler's
// answers against it, so it is the contract the handlers keep.
//
//go:embed openapi.yaml
var openAPIDoc []byte

// OpenAPI returns the OpenAPI 3 document of the API, as YAML.
func OpenAPI() []byte { return slices.Clone(openAPIDoc) }

func init() {
	// The index (GET /api/v1/) lists the document after the time series.
	i := slices.IndexFunc(endpoints, func(e map[string]string) bool { return e["path"] == "/api/v1/timeseries" })
	endpoints = slices.Insert(endpoints, i+1, map[string]string{
		"method": "GET", "path": "/api/v1/openapi.yaml", "what": "OpenAPI 3 document of this API"})
}

func (s *Server) getOpenAPI(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "application/yaml; charset=utf-8")
	h.Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(openAPIDoc)
}
