export default function HomePage() {
  return (
    <main>
      <h1>Payload deploy example</h1>
      <p>
        Admin: <a href="/admin">/admin</a> · REST: <a href="/api/posts">/api/posts</a> · Health:{' '}
        <a href="/api/health">/api/health</a>, <a href="/api/health/ready">/api/health/ready</a>
      </p>
    </main>
  )
}
