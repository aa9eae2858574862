// Log Analytics workspace and workspace-based Application Insights with local
// (instrumentation key) auth disabled: telemetry is accepted only with an Entra
// token, which the app gets from the managed identity (Monitoring Metrics Publisher).

param location string
param tags object = {}
param workspaceName string
param appInsightsName string

@description('Principal id of the managed identity that sends telemetry.')
param principalId string

@minValue(30)
param retentionInDays int = 30

var monitoringMetricsPublisher = '3913510d-42f4-4e42-8a64-420c390055eb'

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: workspaceName
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: retentionInDays
  }
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: appInsightsName
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: workspace.id
    DisableLocalAuth: true
  }
}

resource metricsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, principalId, monitoringMetricsPublisher)
  scope: appInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', monitoringMetricsPublisher)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

output name string = appInsights.name
// Not a credential: with DisableLocalAuth the ingestion endpoint also needs an Entra token.
output connectionString string = appInsights.properties.ConnectionString
